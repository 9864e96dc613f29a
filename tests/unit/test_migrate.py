"""``spindle migrate``: an installation made through the API on SQLite + the data dir is
copied to PostgreSQL + S3 (real servers), verified object by object, and then served from
there; a difference planted in the copy is found by the verification."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from spindle.sandbox.settings import SandboxSettings
from spindle.settings import ServerSettings
from spindle.store.base import Update
from spindle.store.factory import metadata_store
from spindle.store.migrate import migrate
from tests.inprocess import app_factory
from tests.pgserver import PostgresServer
from tests.s3server import S3Server
from tests.upstream.server import UpstreamHandle


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PostgresServer, S3Server]]:
    pg, s3 = PostgresServer().start(), S3Server().start()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SPINDLE_TEST_BACKENDS", raising=False)  # the source here is SQLite + the data dir
        for key, value in s3.env().items():
            mp.setenv(key, value)
        yield pg, s3
    pg.stop()
    s3.stop()


def sdk(http: object) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="sk", http_client=http, max_retries=0)  # type: ignore[arg-type]


def test_sqlite_to_postgres_and_s3(tmp_path: Path, upstream: UpstreamHandle,
                                   servers: tuple[PostgresServer, S3Server]) -> None:
    pg, s3 = servers
    data = tmp_path / "data"
    payload = bytes(range(256)) * 5000
    upstream.script("migrate me", [{"content": "an answer worth keeping", "chunk_chars": 5}])
    with app_factory(data, upstream, sandbox=SandboxSettings(enabled=False)) as factory:
        client = sdk(factory())
        file = client.files.create(file=("data.bin", io.BytesIO(payload)), purpose="assistants")
        assistant = client.beta.assistants.create(model="m", name="keeper", metadata={"k": "v"})
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "migrate me"}])
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                       poll_interval_ms=20)
        assert run.status == "completed"
    url = pg.create_database("migrated")
    s3.create_bucket("migrated")
    out: list[str] = []
    report = asyncio.run(migrate(data, "", url, "", "s3://migrated/files", out))
    assert report.problems == [], out
    assert report.objects >= 6 and report.events > 10 and report.files == 1 and report.file_bytes == len(payload)
    assert out[-1].startswith("verified")

    # A second copy into the same database is refused (never merged).
    with pytest.raises(RuntimeError, match="not empty"):
        asyncio.run(migrate(data, "", url, None, None, []))

    with app_factory(data, upstream, sandbox=SandboxSettings(enabled=False), database_url=url,
                     blob_url="s3://migrated/files") as factory:
        client = sdk(factory())
        assert client.beta.assistants.retrieve(assistant.id).metadata == {"k": "v"}
        messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
        assert [m.content[0].text.value for m in messages] == ["migrate me", "an answer worth keeping"]  # type: ignore[union-attr]
        assert [s.type for s in client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data] == [
            "message_creation"]
        assert client.files.content(file.id).read() == payload

    # The verification really compares: a changed object in the copy is reported.
    async def tamper_and_verify() -> list[str]:
        target = metadata_store(ServerSettings(data_dir=data, database_url=url))
        await target.open()
        await target.write([Update("assistant", assistant.id, fields={"name": "changed"})])
        await target.close()
        from spindle.store import migrate as module

        source = metadata_store(ServerSettings(data_dir=data))
        target = metadata_store(ServerSettings(data_dir=data, database_url=url))
        await source.open()
        await target.open()
        check = module.CopyReport()
        await module.verify(source, target, None, check)
        await source.close()
        await target.close()
        return check.problems

    assert asyncio.run(tamper_and_verify()) == [f"assistant {assistant.id} differs"]


def test_the_cli_copies_and_verifies(tmp_path: Path, upstream: UpstreamHandle,
                                     servers: tuple[PostgresServer, S3Server]) -> None:
    import subprocess
    import sys

    pg, s3 = servers
    data = tmp_path / "data"
    with app_factory(data, upstream, sandbox=SandboxSettings(enabled=False)) as factory:
        client = sdk(factory())
        client.beta.assistants.create(model="m", name="from the cli")
        client.files.create(file=("a.txt", io.BytesIO(b"bytes to carry")), purpose="assistants")
    url = pg.create_database("cli_target")
    s3.create_bucket("cli-target")
    command = [sys.executable, "-m", "spindle.cli", "migrate", "--data-dir", str(data), "--to", url,
               "--blobs-to", "s3://cli-target"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout and "1 files" in done.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "not empty" in again.stderr
