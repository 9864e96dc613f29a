"""The PostgreSQL metadata store (``SPINDLE_DATABASE_URL=postgresql://...``), on psycopg 3's
async connection pool.

Same contract as the SQLite store (``tests/unit/test_store_contract.py`` runs both): each
``write`` is one transaction; ``Update`` reads its row ``FOR UPDATE`` and checks ``expect``
there, so compare-and-set holds across processes; event sequence numbers are gap-free and
ordered per run because appends to one run's log take a transaction-scoped advisory lock on
that run. Objects are kept as ``json`` (the text as written), filtered with ``->>``.

Within one process ``on_commit`` hands committed events to the event log, as with SQLite.
Across processes every commit that appends events sends ``NOTIFY spindle_events`` (one per
run, delivered at commit); each process LISTENs on its own connection and hands the run ids
to ``on_remote_commit``, so a stream served by one process follows a run another executes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

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
from spindle.store.migrations import MigrationError, load_migrations, statements
from spindle.store.prepared import PreparedPut, dumps, prepare
from spindle.store.sqlquery import Dialect, PagePlan, scan_sql

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x5350494E  # "SPIN": one process migrates at a time
_CHANNEL = "spindle_events"
_MAX_BATCH = 256



class PostgresStore(MetadataStore):
    shared = True
    def __init__(self, url: str, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        # Autocommit: a read is one statement; a write opens its own transaction block.
        self._pool = AsyncConnectionPool(url, min_size=min_size, max_size=max_size, open=False,
                                         kwargs={"autocommit": True})
        self.on_commit: Callable[[dict[str, list[StoredEvent]]], None] | None = None
        self.on_remote_commit: Callable[[set[str]], None] | None = None
        # Tells this process's own notifications from other processes'.
        self._token = secrets.token_hex(8)
        self._listener: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending: list[tuple[list[Any], asyncio.Future[list[int | None]]]] = []
        self._wake = asyncio.Event()
        self._committing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=30)
        async with self._pool.connection() as conn:
            await self._migrate(conn)
        self._writer = asyncio.create_task(self._write_loop(), name="postgres-writer")
        ready = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(ready), name="postgres-listen")
        await asyncio.wait_for(asyncio.shield(ready), 30)

    async def close(self) -> None:
        while self._pending or self._committing:  # flush what was handed over before closing
            await asyncio.sleep(0.01)
        for task in (self._listener, self._writer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._pool.close()

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        """Hands the ids of runs other processes appended events to to ``on_remote_commit``;
        reconnects after a failure (streams poll meanwhile, so nothing is lost)."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {_CHANNEL}")
                    if not ready.done():
                        ready.set_result(None)
                    async for note in conn.notifies():
                        token, _, run_id = note.payload.partition(" ")
                        if token != self._token and run_id and self.on_remote_commit is not None:
                            self.on_remote_commit({run_id})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not ready.done():
                    ready.set_exception(exc)
                    return
                log.warning("event notifications from PostgreSQL stopped (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " sha256 TEXT NOT NULL, applied_at BIGINT NOT NULL)")
            cur = await conn.execute("SELECT version, sha256 FROM schema_migrations")
            applied = {row[0]: row[1] for row in await cur.fetchall()}
            for migration in load_migrations("spindle.store.migrations.postgres"):
                if migration.version in applied:
                    if applied[migration.version] != migration.sha256:
                        raise MigrationError(f"migration {migration.version} ({migration.name}) changed after it "
                                             "was applied; add a new migration instead of editing an old one")
                    continue
                for statement in statements(migration.sql):
                    await conn.execute(statement.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, sha256, applied_at) "
                    "VALUES (%s, %s, %s, extract(epoch from now())::bigint)",
                    (migration.version, migration.name, migration.sha256))

    # -- writes ----------------------------------------------------------------------------

    async def write(self, ops: Sequence[Op]) -> list[int | None]:
        if not ops:
            return []
        # Serialized before the first await: callers keep changing their dicts afterwards.
        future: asyncio.Future[list[int | None]] = asyncio.get_running_loop().create_future()
        self._pending.append(([prepare(op) for op in ops], future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        """Group commit, as in the SQLite store: the writes waiting when a commit ends go
        into the next transaction together, each in its own savepoint (one failing request
        never undoes another), so 32 busy runs cost a few commits, not hundreds."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
                self._committing = True
                try:
                    await self._commit_batch(batch)
                except Exception as exc:  # the commit itself failed: every request in it did
                    log.warning("postgres commit failed: %s", exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                finally:
                    self._committing = False

    async def _commit_batch(self, batch: list[tuple[list[Any], asyncio.Future[list[int | None]]]]) -> None:
        outcomes: list[tuple[asyncio.Future[list[int | None]], list[int | None] | BaseException]] = []
        touched_all: dict[str, list[StoredEvent]] = {}
        async with self._pool.connection() as conn:
            async with conn.transaction():
                for prepared, future in batch:
                    touched: dict[str, list[StoredEvent]] = {}
                    try:
                        async with conn.transaction():  # a savepoint
                            results = [await self._apply(conn, op, touched) for op in prepared]
                    except Exception as exc:  # reported to that request's caller only
                        outcomes.append((future, exc))
                        continue
                    outcomes.append((future, results))
                    for run_id, items in touched.items():
                        touched_all.setdefault(run_id, []).extend(items)
                if touched_all:  # delivered to listeners when (and only if) this commits
                    await conn.execute("SELECT pg_notify(%s, unnest(%s::text[]))",
                                       (_CHANNEL, [f"{self._token} {run_id}" for run_id in touched_all]))
        for future, outcome in outcomes:
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if touched_all and self.on_commit is not None:
            self.on_commit(touched_all)

    async def _apply(self, conn: psycopg.AsyncConnection[Any], op: Any,
                     touched: dict[str, list[StoredEvent]]) -> int | None:
        if isinstance(op, PreparedPut):
            values = (op.id, op.kind, op.project, op.parent, op.created_at, op.data)
            if op.create_only:
                cur = await conn.execute(
                    "INSERT INTO objects (id, kind, project, parent, created_at, data) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO NOTHING", values)
                if cur.rowcount == 0:
                    raise Conflict(op.kind, op.id, "it exists already")
            else:
                await conn.execute(
                    "INSERT INTO objects (id, kind, project, parent, created_at, data) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data", values)
            return None
        if isinstance(op, Update):
            stored = await self._load(conn, op.kind, op.id, lock=True)
            reason = matches(stored, op.expect)
            if reason is not None or stored is None:
                raise Conflict(op.kind, op.id, reason or "it does not exist")
            await conn.execute("UPDATE objects SET data = %s WHERE id = %s", (dumps(apply_update(stored, op)), op.id))
            return None
        if isinstance(op, Delete):
            if op.when is not None and matches(await self._load(conn, op.kind, op.id, lock=True), op.when) is not None:
                return None
            await conn.execute("DELETE FROM objects WHERE id = %s AND kind = %s", (op.id, op.kind))
            if op.kind == "run":
                await conn.execute("DELETE FROM events WHERE run_id = %s", (op.id,))
            return None
        if isinstance(op, DeleteChildren):
            if op.kind == "run":
                await conn.execute("DELETE FROM events WHERE run_id IN (SELECT id FROM objects WHERE kind = 'run' "
                                   "AND parent = %s)", (op.parent,))
            await conn.execute("DELETE FROM objects WHERE kind = %s AND parent = %s", (op.kind, op.parent))
            return None
        if isinstance(op, AppendEvent):
            data = op.data if isinstance(op.data, str) else dumps(op.data)
            earlier = touched.get(op.run_id)
            if earlier:  # this transaction holds the run's lock already and knows its last seq
                seq = earlier[-1].seq + 1
                await conn.execute("INSERT INTO events (run_id, seq, event, data) VALUES (%s, %s, %s, %s)",
                                   (op.run_id, seq, op.event, data))
            else:
                # Appends to one run's log wait for each other: MAX(seq) + 1 stays gap-free and ordered.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (op.run_id,))
                cur = await conn.execute(
                    "INSERT INTO events (run_id, seq, event, data) SELECT %s, COALESCE(MAX(seq), 0) + 1, %s, %s "
                    "FROM events WHERE run_id = %s RETURNING seq", (op.run_id, op.event, data, op.run_id))
                row = await cur.fetchone()
                seq = int(row[0]) if row else 1
            touched.setdefault(op.run_id, []).append(StoredEvent(seq, op.event, data))
            return seq
        raise TypeError(f"unknown op {op!r}")  # pragma: no cover - the Op union is closed

    @staticmethod
    async def _load(conn: psycopg.AsyncConnection[Any], kind: str, object_id: str,
                    lock: bool = False) -> dict[str, Any] | None:
        query = "SELECT data::text FROM objects WHERE id = %s AND kind = %s" + (" FOR UPDATE" if lock else "")
        cur = await conn.execute(query, (object_id, kind))
        row = await cur.fetchone()
        return json.loads(row[0]) if row else None

    # -- reads -----------------------------------------------------------------------------

    async def _fetch(self, query: sql.Composable | str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, args)  # type: ignore[arg-type]
            return await cur.fetchall()

    async def get(self, kind: str, object_id: str, project: str | None) -> dict[str, Any] | None:
        if project is None:
            rows = await self._fetch("SELECT data::text FROM objects WHERE id = %s AND kind = %s", (object_id, kind))
        else:
            rows = await self._fetch("SELECT data::text FROM objects WHERE id = %s AND kind = %s AND project = %s",
                                     (object_id, kind, project))
        return json.loads(rows[0][0]) if rows else None

    async def locate(self, kind: str, object_id: str) -> tuple[str, str | None] | None:
        rows = await self._fetch("SELECT project, parent FROM objects WHERE id = %s AND kind = %s", (object_id, kind))
        return (rows[0][0], rows[0][1]) if rows else None

    async def page(self, query: ListQuery) -> Page:
        plan = PagePlan(_DIALECT, query)
        for param, sql_text, args in plan.cursor_lookups():
            rows = await self._fetch(sql_text, args)
            plan.add_cursor(param, rows[0][0] if rows else None)
        sql_text, args = plan.select()
        return plan.page(await self._fetch(sql_text, args))

    async def scan(self, kind: str, where: dict[str, Any] | None = None, *, parent: str | None = None,
                   project: str | None = None, mentions: str | None = None) -> list[dict[str, Any]]:
        sql_text, args = scan_sql(_DIALECT, kind, where, parent=parent, project=project, mentions=mentions)
        return [json.loads(r[0]) for r in await self._fetch(sql_text, args)]

    async def dump(self, after_seq: int = 0, limit: int = 1000) -> list[StoredObject]:
        rows = await self._fetch("SELECT seq, kind, project, parent, data::text FROM objects WHERE seq > %s "
                                 "ORDER BY seq LIMIT %s", (after_seq, limit))
        return [StoredObject(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    async def event_runs(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT run_id FROM events ORDER BY run_id", ())
        return [r[0] for r in rows]

    async def read_events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        rows = await self._fetch("SELECT seq, event, data FROM events WHERE run_id = %s AND seq > %s ORDER BY seq "
                                 "LIMIT %s", (run_id, after_seq, limit))
        return [StoredEvent(r[0], r[1], r[2]) for r in rows]

    async def last_event_seq(self, run_id: str) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = %s", (run_id,))
        return int(rows[0][0])


def _path(key: str) -> str:
    return "{" + ",".join(key.split(".")) + "}"


def _json_text(value: Any) -> str | None:
    """How ``->>`` shows a JSON scalar: strings bare, numbers and booleans as JSON, null as NULL."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return dumps(value)


def _field_equals(key: str, value: Any) -> tuple[str, list[Any]]:
    """A clause testing a top-level (or dotted) JSON field; lists and tuples mean any-of."""
    target = f"(data #>> '{_path(key)}')"
    if isinstance(value, (list, tuple, set)):
        texts = [_json_text(v) for v in value]
        present = [t for t in texts if t is not None]
        parts = [f"{target} = ANY(%s)"] if present else []
        if len(present) < len(texts):
            parts.append(f"{target} IS NULL")
        return "(" + (" OR ".join(parts) or "FALSE") + ")", [present] if present else []
    text = _json_text(value)
    if text is None:
        return f"{target} IS NULL", []
    return f"{target} = %s", [text]


_DIALECT = Dialect(param="%s", field_equals=_field_equals, contains="strpos(data::text, %s) > 0", data="data::text")
