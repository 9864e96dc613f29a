"""What the in-process test tiers share: the real app on a temporary data dir, opened with
Starlette's TestClient (an httpx client, so the official SDK can use it directly)."""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from spindle.app import create_app
from spindle.sandbox.settings import SandboxSettings
from spindle.settings import ServerSettings, Settings
from spindle.store.factory import metadata_store
from tests.pgserver import PostgresServer
from tests.s3server import S3Server
from tests.upstream.server import UpstreamHandle

AppFactory = Callable[..., TestClient]
_PG: list[PostgresServer] = []


_S3: list[S3Server] = []


def backend_settings() -> dict[str, str]:
    """Server settings for the backends named in ``SPINDLE_TEST_BACKENDS`` (``postgres``,
    ``s3``, joined by ``+``); their servers start on first use and stop at exit."""
    wanted = set(filter(None, os.environ.get("SPINDLE_TEST_BACKENDS", "").split("+")))
    out: dict[str, str] = {}
    if "postgres" in wanted:
        if not _PG:
            _PG.append(PostgresServer().start())
            atexit.register(_PG[0].stop)
        out["database_url"] = _PG[0].create_database("t_" + secrets.token_hex(6))
    if "s3" in wanted:
        if not _S3:
            _S3.append(S3Server().start())
            atexit.register(_S3[0].stop)
            _S3[0].apply_env()  # boto3 in this process reads the standard AWS_* variables
        bucket = "t-" + secrets.token_hex(6)
        _S3[0].create_bucket(bucket)
        out["blob_url"] = f"s3://{bucket}/files"
    return out


async def read_run_events(http: TestClient, run_id: str) -> list[tuple[str, str]]:
    """A run's event log as the store holds it, read through a second store object on the
    app's own database (SQLite or PostgreSQL): what every stream of the run replays."""
    store = metadata_store(http.app.state.runtime.settings.server)  # type: ignore[attr-defined]
    await store.open()
    try:
        return [(e.event, e.data) for e in await store.read_events(run_id, limit=100_000)]
    finally:
        await store.close()


@contextlib.contextmanager
def app_factory(data_dir: Path, upstream: UpstreamHandle, *, sandbox: SandboxSettings | None = None,
                **defaults: Any) -> Iterator[AppFactory]:
    """Yields ``factory(**server_overrides)``; every app it started is closed on exit.

    ``sandbox=None`` reads the sandbox settings from the environment. With
    ``SPINDLE_TEST_BACKENDS=postgres+s3`` the apps keep their metadata in a fresh PostgreSQL
    database and their file bytes in a fresh bucket of an S3-protocol server (one of each per
    factory, so a restarted app finds its data) instead of SQLite and the data dir."""
    opened: list[TestClient] = []
    database = backend_settings()

    def factory(**overrides: Any) -> TestClient:
        values: dict[str, Any] = {"data_dir": data_dir, "llm_base_url": upstream.base_url, **database, **defaults,
                                  **overrides}
        settings = Settings(server=ServerSettings(**values), sandbox=sandbox or SandboxSettings())
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    try:
        yield factory
    finally:
        for client in reversed(opened):
            client.__exit__(None, None, None)
