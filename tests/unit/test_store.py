"""Durability across kill -9 (SQLite and PostgreSQL), SQLite's migrations, the CLI guard.
The behaviour every store shares is the contract suite (test_store_contract.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from spindle.settings import ServerSettings
from spindle.store.base import ListQuery
from spindle.store.factory import metadata_store
from spindle.store.migrations import Migration, MigrationError, apply_migrations
from tests.pgserver import PostgresServer


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_commits_survive_kill9(tmp_path: Path, backend: str) -> None:
    server = PostgresServer().start() if backend == "postgres" else None
    try:
        settings = ServerSettings(data_dir=tmp_path, database_url=server.create_database("k9") if server else "")
        script = f"""
import asyncio, os, signal
from spindle.settings import ServerSettings
from spindle.store.factory import metadata_store
async def main():
    store = metadata_store(ServerSettings.model_validate_json({settings.model_dump_json()!r}))
    await store.open()
    for i in range(50):
        await store.put('thing', {{'id': f't{{i}}', 'created_at': 1}}, 'p')
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
        assert proc.returncode == -9, proc.stderr

        async def check() -> None:
            store = metadata_store(settings)
            await store.open()
            page = await store.page(ListQuery(kind="thing", project="p", limit=100))
            assert len(page.items) == 50
            await store.close()

        run(check())
    finally:
        if server is not None:
            server.stop()


def test_migrations_apply_once_and_refuse_edits(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    first = [Migration(1, "init", "CREATE TABLE a (x INTEGER)")]
    assert apply_migrations(conn, first) == [1]
    assert apply_migrations(conn, first) == []
    assert apply_migrations(conn, first + [Migration(2, "more", "CREATE TABLE b (y INTEGER)")]) == [2]
    with pytest.raises(MigrationError):
        apply_migrations(conn, [Migration(1, "init", "CREATE TABLE a (x TEXT)")])
    # A failing migration leaves nothing behind.
    with pytest.raises(sqlite3.OperationalError):
        apply_migrations(conn, first + [Migration(3, "bad", "CREATE TABLE c (z INTEGER); CREATE TABLE a (x)")])
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'c'").fetchone() is None
    assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")] == [1, 2]


def test_cli_refuses_public_host_without_keys(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "spindle", "serve", "--host", "0.0.0.0", "--port", "0",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SPINDLE_API_KEYS": ""})
    assert proc.returncode == 2
    assert "SPINDLE_API_KEYS" in proc.stderr
