"""The vector-store index on PostgreSQL is shared by every process (real servers, real kill -9):
a store ingested by one process is searched by another with its own data dir, the index
survives ``kill -9`` of the process that built it, and a file deleted through one process
disappears from the other's searches."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

sys.path.insert(0, str(harness.REPO_ROOT))
from tests.pgserver import PostgresServer, PostgresUnavailable  # noqa: E402

pytestmark = [pytest.mark.min_sdk(2),  # one SDK is enough: this is about the server processes
              pytest.mark.timeout(300)]  # two servers load the embedding model, then ingest


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is needed here: {exc}")
    yield server
    server.stop()


def _wait_completed(client: Any, store_id: str, file_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.vector_stores.files.retrieve(vector_store_id=store_id, file_id=file_id).status
        if status != "in_progress":
            assert status == "completed"
            return
        time.sleep(0.1)
    raise AssertionError("ingestion did not finish")


def _files_found(client: Any, store_id: str, query: str) -> list[str]:
    return [hit.file_id for hit in client.vector_stores.search(vector_store_id=store_id, query=query).data]


def test_another_process_searches_the_store_after_a_kill9(database: PostgresServer,
                                                           tmp_path: Path) -> None:
    url = database.create_database("s_" + tmp_path.name[-12:].replace("-", "_").lower())
    env = {"SPINDLE_DATABASE_URL": url, "SPINDLE_SANDBOX_ENABLED": "false"}
    a = harness.start_server(None, tmp_path / "a", env, log_path=tmp_path / "a.log")
    b = harness.start_server(None, tmp_path / "b", env, log_path=tmp_path / "b.log")
    try:
        ca, cb = harness.make_client("openai", a.base_url), harness.make_client("openai", b.base_url)
        walrus = ca.files.create(file=("walrus.txt", b"The walrus naps on the ice floe near Svalbard."),
                                 purpose="assistants")
        other = ca.files.create(file=("ferry.txt", b"The ferry to Tromso leaves at nine every morning."),
                                purpose="assistants")
        store = ca.vector_stores.create(name="shared", file_ids=[walrus.id, other.id])
        for file_id in (walrus.id, other.id):
            _wait_completed(ca, store.id, file_id)
        a.kill9()
        # b has its own empty data dir: whatever it finds comes from the database
        assert not list((tmp_path / "b").glob("**/chunks.sqlite"))
        assert _files_found(cb, store.id, "where does the walrus sleep?")[0] == walrus.id
        assert _files_found(cb, store.id, "ferry departure time")[0] == other.id
        cb.vector_stores.files.delete(vector_store_id=store.id, file_id=walrus.id)
        a.restart()
        ca.close()
        ca = harness.make_client("openai", a.base_url)
        found = _files_found(ca, store.id, "where does the walrus sleep?")
        assert walrus.id not in found and found == [other.id]
        assert ca.vector_stores.retrieve(store.id).file_counts.completed == 1
        ca.close()
        cb.close()
    finally:
        a.stop()
        b.stop()
