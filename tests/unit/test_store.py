"""The SQLite store: ordering and cursors, atomic writes, the event log, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from spindle.store.base import AppendEvent, CursorNotFound, Delete, ListQuery, Put
from spindle.store.migrations import Migration, MigrationError, apply_migrations
from spindle.store.sqlite import SQLiteStore


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_pagination_both_orders_and_cursors(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "db.sqlite")
        await store.open()
        for i in range(7):
            await store.put("thing", {"id": f"t{i}", "created_at": 1, "n": i % 2}, "p1")
        await store.put("thing", {"id": "other", "created_at": 1}, "p2")

        async def ids(**kw: object) -> tuple[list[str], bool]:
            page = await store.page(ListQuery(kind="thing", project="p1", **kw))  # type: ignore[arg-type]
            return [o["id"] for o in page.items], page.has_more

        assert await ids(limit=3) == (["t6", "t5", "t4"], True)
        assert await ids(limit=3, after="t4") == (["t3", "t2", "t1"], True)
        assert await ids(limit=3, after="t1") == (["t0"], False)
        assert await ids(limit=2, order="asc", after="t2") == (["t3", "t4"], True)
        assert await ids(limit=2, before="t2") == (["t4", "t3"], True)
        assert await ids(limit=10, order="asc", before="t2") == (["t0", "t1"], False)
        assert await ids(limit=10, where={"n": 1}) == (["t5", "t3", "t1"], False)
        with pytest.raises(CursorNotFound):
            await ids(after="other")  # another project's object is not a cursor here
        await store.close()

    run(scenario())


def test_write_is_all_or_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "db.sqlite")
        await store.open()
        await store.put("thing", {"id": "keep", "created_at": 1}, "p")
        bad = Put("thing", {"id": "half", "created_at": 1}, "p")
        broken = Put("thing", {"created_at": 1}, "p")  # no id: the op fails inside the transaction
        with pytest.raises(KeyError):
            await store.write([bad, broken])
        assert await store.get("thing", "half", "p") is None
        # A failing request in a batch does not undo the others committed with it.
        results = await asyncio.gather(store.write([Put("thing", {"id": "a", "created_at": 1}, "p")]),
                                       store.write([Delete("thing", "keep"), broken]),
                                       return_exceptions=True)
        assert results[0] == [None] and isinstance(results[1], Exception)
        assert await store.get("thing", "a", "p") is not None
        assert await store.get("thing", "keep", "p") is not None
        await store.close()

    run(scenario())


def test_event_log_sequence(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "db.sqlite")
        await store.open()
        seqs = await store.write([AppendEvent("run_1", "a", {"x": 1}), AppendEvent("run_1", "b", "raw"),
                                  AppendEvent("run_2", "c", {})])
        assert seqs == [1, 2, 1]
        events = await store.read_events("run_1", after_seq=1)
        assert [(e.seq, e.event, e.data) for e in events] == [(2, "b", "raw")]
        assert await store.last_event_seq("run_1") == 2
        await store.close()

    run(scenario())


def test_commits_survive_kill9(tmp_path: Path) -> None:
    script = f"""
import asyncio, os, signal
from spindle.store.sqlite import SQLiteStore
async def main():
    store = SQLiteStore(__import__('pathlib').Path({str(tmp_path / 'db.sqlite')!r}))
    await store.open()
    for i in range(50):
        await store.put('thing', {{'id': f't{{i}}', 'created_at': 1}}, 'p')
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9

    async def check() -> None:
        store = SQLiteStore(tmp_path / "db.sqlite")
        await store.open()
        page = await store.page(ListQuery(kind="thing", project="p", limit=100))
        assert len(page.items) == 50
        await store.close()

    run(check())


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
