"""The embedded metadata store: one SQLite database in WAL mode.

All writes go through one writer thread fed by a queue. It drains whatever is waiting and
commits it in a single transaction (group commit), each request inside its own savepoint so
one bad request cannot undo another's. That keeps hundreds of small event appends per second
cheap. Reads run on a small thread pool with one connection per thread, so SQLite never blocks
the event loop. ``on_commit`` tells the event log which runs got new events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from spindle.store.base import (
    AppendEvent,
    Conflict,
    Delete,
    DeleteChildren,
    ListQuery,
    MetadataStore,
    Op,
    Page,
    StoredEvent,
    StoredObject,
    Update,
    apply_update,
    matches,
)
from spindle.store.migrations import apply_migrations
from spindle.store.prepared import PreparedPut, prepare
from spindle.store.sqlquery import Dialect, PagePlan, scan_sql

log = logging.getLogger(__name__)

_MAX_BATCH = 512


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash (kill -9) without losing commits;
    # only an OS crash or power loss could drop the last transactions.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class _WriteRequest:
    __slots__ = ("ops", "future", "loop")

    def __init__(self, ops: Sequence[Op], future: asyncio.Future[list[int | None]], loop: asyncio.AbstractEventLoop):
        self.ops = ops
        self.future = future
        self.loop = loop


class SQLiteStore(MetadataStore):
    def __init__(self, path: Path, read_threads: int = 4) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_WriteRequest | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._all_read_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Called on the event loop after each commit with the events it appended, by run.
        self.on_commit: Callable[[dict[str, list[StoredEvent]]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        apply_migrations(conn)
        self._writer = threading.Thread(target=self._write_loop, args=(conn,), name="sqlite-writer", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._all_read_conns:
                conn.close()
            self._all_read_conns.clear()

    # -- writes ----------------------------------------------------------------------------

    async def write(self, ops: Sequence[Op]) -> list[int | None]:
        if not ops:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int | None]] = loop.create_future()
        # Serialize here, on the caller's side: callers keep mutating their dicts after
        # handing them over, and the writer thread must see them as they were.
        self._queue.put(_WriteRequest([prepare(op) for op in ops], future, loop))
        return await future

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit_batch(conn, batch)
        conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_WriteRequest]) -> None:
        outcomes: list[tuple[_WriteRequest, list[int | None] | BaseException]] = []
        touched_runs: dict[str, list[StoredEvent]] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in batch:
                conn.execute("SAVEPOINT req")
                try:
                    results, runs = self._apply(conn, request.ops)
                except Exception as exc:  # reported to that request's caller only
                    conn.execute("ROLLBACK TO req")
                    conn.execute("RELEASE req")
                    outcomes.append((request, exc))
                    continue
                conn.execute("RELEASE req")
                for run_id, items in runs.items():
                    touched_runs.setdefault(run_id, []).extend(items)
                outcomes.append((request, results))
            conn.execute("COMMIT")
        except Exception as exc:
            log.exception("sqlite commit failed")
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            outcomes = [(request, exc) for request in batch]
            touched_runs = {}
        for request, outcome in outcomes:
            request.loop.call_soon_threadsafe(_resolve, request.future, outcome)
        if touched_runs and self.on_commit is not None and batch:
            batch[0].loop.call_soon_threadsafe(self.on_commit, touched_runs)

    def _apply(self, conn: sqlite3.Connection, ops: Sequence[Any]) -> tuple[list[int | None], dict[str, list[StoredEvent]]]:
        results: list[int | None] = []
        runs: dict[str, list[StoredEvent]] = {}
        for op in ops:
            if isinstance(op, PreparedPut):
                values = (op.id, op.kind, op.project, op.parent, op.created_at, op.data)
                if op.create_only:
                    try:
                        conn.execute("INSERT INTO objects (id, kind, project, parent, created_at, data) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", values)
                    except sqlite3.IntegrityError:
                        raise Conflict(op.kind, op.id, "it exists already") from None
                else:
                    conn.execute(
                        "INSERT INTO objects (id, kind, project, parent, created_at, data) VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET data = excluded.data", values)
                results.append(None)
            elif isinstance(op, Update):
                stored = self._load(conn, op.kind, op.id)
                reason = matches(stored, op.expect)
                if reason is not None or stored is None:
                    raise Conflict(op.kind, op.id, reason or "it does not exist")
                conn.execute("UPDATE objects SET data = ? WHERE id = ?",
                             (json.dumps(apply_update(stored, op), separators=(",", ":")), op.id))
                results.append(None)
            elif isinstance(op, Delete):
                if op.when is not None and matches(self._load(conn, op.kind, op.id), op.when) is not None:
                    results.append(None)  # a conditional delete whose condition fails is a no-op
                    continue
                conn.execute("DELETE FROM objects WHERE id = ? AND kind = ?", (op.id, op.kind))
                if op.kind == "run":
                    conn.execute("DELETE FROM events WHERE run_id = ?", (op.id,))
                results.append(None)
            elif isinstance(op, DeleteChildren):
                if op.kind == "run":
                    conn.execute(
                        "DELETE FROM events WHERE run_id IN (SELECT id FROM objects WHERE kind = 'run' AND parent = ?)",
                        (op.parent,),
                    )
                conn.execute("DELETE FROM objects WHERE kind = ? AND parent = ?", (op.kind, op.parent))
                results.append(None)
            elif isinstance(op, AppendEvent):
                row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (op.run_id,)).fetchone()
                seq = int(row[0]) + 1
                data = op.data if isinstance(op.data, str) else json.dumps(op.data)  # serialized by write()
                conn.execute("INSERT INTO events (run_id, seq, event, data) VALUES (?, ?, ?, ?)",
                             (op.run_id, seq, op.event, data))
                runs.setdefault(op.run_id, []).append(StoredEvent(seq, op.event, data))
                results.append(seq)
            else:  # pragma: no cover - the Op union is closed
                raise TypeError(f"unknown op {op!r}")
        return results, runs

    @staticmethod
    def _load(conn: sqlite3.Connection, kind: str, object_id: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT data FROM objects WHERE id = ? AND kind = ?", (object_id, kind)).fetchone()
        return json.loads(row[0]) if row else None

    # -- reads -----------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._all_read_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._conn()))

    async def get(self, kind: str, object_id: str, project: str | None) -> dict[str, Any] | None:
        def q(conn: sqlite3.Connection) -> dict[str, Any] | None:
            if project is None:
                row = conn.execute("SELECT data FROM objects WHERE id = ? AND kind = ?", (object_id, kind)).fetchone()
            else:
                row = conn.execute(
                    "SELECT data FROM objects WHERE id = ? AND kind = ? AND project = ?", (object_id, kind, project)
                ).fetchone()
            return json.loads(row[0]) if row else None

        return await self._read(q)

    async def locate(self, kind: str, object_id: str) -> tuple[str, str | None] | None:
        def q(conn: sqlite3.Connection) -> tuple[str, str | None] | None:
            row = conn.execute("SELECT project, parent FROM objects WHERE id = ? AND kind = ?",
                               (object_id, kind)).fetchone()
            return (row[0], row[1]) if row else None

        return await self._read(q)

    async def page(self, query: ListQuery) -> Page:
        def q(conn: sqlite3.Connection) -> Page:
            plan = PagePlan(_DIALECT, query)
            for param, sql, args in plan.cursor_lookups():
                row = conn.execute(sql, args).fetchone()
                plan.add_cursor(param, row[0] if row else None)
            sql, args = plan.select()
            return plan.page(conn.execute(sql, args).fetchall())

        return await self._read(q)

    async def scan(self, kind: str, where: dict[str, Any] | None = None, *, parent: str | None = None,
                   project: str | None = None, mentions: str | None = None) -> list[dict[str, Any]]:
        sql, args = scan_sql(_DIALECT, kind, where, parent=parent, project=project, mentions=mentions)

        def q(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return [json.loads(r[0]) for r in conn.execute(sql, args).fetchall()]

        return await self._read(q)

    async def dump(self, after_seq: int = 0, limit: int = 1000) -> list[StoredObject]:
        def q(conn: sqlite3.Connection) -> list[StoredObject]:
            rows = conn.execute("SELECT seq, kind, project, parent, data FROM objects WHERE seq > ? ORDER BY seq LIMIT ?",
                                (after_seq, limit)).fetchall()
            return [StoredObject(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

        return await self._read(q)

    async def event_runs(self) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT DISTINCT run_id FROM events ORDER BY run_id").fetchall()]

        return await self._read(q)

    async def read_events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        def q(conn: sqlite3.Connection) -> list[StoredEvent]:
            rows = conn.execute(
                "SELECT seq, event, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, after_seq, limit),
            ).fetchall()
            return [StoredEvent(r[0], r[1], r[2]) for r in rows]

        return await self._read(q)

    async def last_event_seq(self, run_id: str) -> int:
        def q(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)).fetchone()
            return int(row[0])

        return await self._read(q)


def _resolve(future: asyncio.Future[list[int | None]], outcome: list[int | None] | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _field_equals(key: str, value: Any) -> tuple[str, list[Any]]:
    target = f"json_extract(data, '$.{key}')"
    if isinstance(value, (list, tuple, set)):
        values = list(value)
        return f"{target} IN ({','.join('?' * len(values))})", values
    if value is None:  # JSON null and an absent field alike
        return f"{target} IS NULL", []
    return f"{target} = ?", [value]


_DIALECT = Dialect(param="?", field_equals=_field_equals, contains="instr(data, ?) > 0", data="data")
