"""What only a store that several processes share has: another process's events reach this
process's streams live (PostgreSQL LISTEN/NOTIFY), and its own commits are not echoed back.

Two store objects on one database stand for two Spindle processes (each has its own pool and
listener connection, exactly as two processes would)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from spindle.engine import events as events_module
from spindle.engine.events import EventLog, done_event
from spindle.store.base import AppendEvent
from spindle.store.postgres import PostgresStore
from tests.pgserver import PostgresServer


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


def test_a_stream_in_one_process_follows_a_run_written_by_another(pg: PostgresServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # With polling effectively off, only the notification can deliver the events in time.
    monkeypatch.setattr(events_module, "_FALLBACK_POLL_S", 60.0)
    url = pg.create_database("two_procs")

    async def scenario() -> None:
        writer, reader = PostgresStore(url), PostgresStore(url)
        await writer.open()
        await reader.open()
        echoed: list[set[str]] = []
        writer.on_remote_commit = echoed.append
        log = EventLog(reader)
        reader.on_commit = log.notify
        reader.on_remote_commit = log.poke
        try:
            received: list[tuple[str, float]] = []

            async def follow() -> None:
                async for item in log.follow("run_x"):
                    received.append((item.event, time.monotonic()))

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.3)  # the follower has read the (empty) backlog and waits
            sent = []
            for i in range(3):
                sent.append(time.monotonic())
                await writer.write([AppendEvent("run_x", f"e{i}", {"i": i})])
                await asyncio.sleep(0.2)
            await writer.write([done_event("run_x")])
            await asyncio.wait_for(follower, 10)
            assert [name for name, _ in received] == ["e0", "e1", "e2", "done"]
            assert max(got - put for (_, got), put in zip(received, sent, strict=False)) < 5.0
            assert echoed == []  # the writer is not told about its own commits
        finally:
            await writer.close()
            await reader.close()

    asyncio.run(scenario())
