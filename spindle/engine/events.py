"""The run event log: what streams are made of.

The engine appends every stream event to the store in the same transaction as the object
change it reports; a stream (SSE response) is only a reader of that log. So a client that
disconnects stops its reader, not the run, and any request — or another process polling the
same database — can follow a run from any point.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from spindle.engine.private import strip_private
from spindle.store.base import AppendEvent, MetadataStore, StoredEvent

DONE = "done"
# After these the log of a run pauses (requires_action) or ends; a reader stops at `done`.
TERMINAL_RUN_EVENTS = {"thread.run.completed", "thread.run.failed", "thread.run.cancelled", "thread.run.expired",
                       "thread.run.incomplete", "thread.run.requires_action"}

# Where the store cannot tell about other processes' appends, readers re-check this often.
_FALLBACK_POLL_S = 0.5
# Put in a follower's queue by ``poke``: not an event, a cue to read the store.
_POKE = StoredEvent(-1, "", "")


def event(name: str, data: dict[str, Any] | str) -> AppendEvent:
    """An op appending one event; the run id is taken from the object (run or its parent)."""
    if isinstance(data, str):
        raise ValueError("use done_event() for the end marker")
    run_id = data["id"] if data.get("object") == "thread.run" else data.get("run_id") or data.get("_run_id")
    if not run_id:
        raise ValueError(f"event {name} has no run id")
    return AppendEvent(run_id, name, strip_private(data))


def done_event(run_id: str) -> AppendEvent:
    return AppendEvent(run_id, DONE, "[DONE]")


class EventLog:
    """Followers read a run's backlog from the store, then take new events as the store
    commits them (handed over in memory, no second read). Readers in other processes fall
    back to polling the store."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._followers: dict[str, set[asyncio.Queue[StoredEvent]]] = defaultdict(set)

    def poke(self, run_ids: set[str]) -> None:
        """Another process appended to these runs' logs: followers read the store now."""
        for run_id in run_ids:
            for queue in self._followers.get(run_id, ()):
                queue.put_nowait(_POKE)

    def notify(self, appended: dict[str, list[StoredEvent]]) -> None:
        """Called by the store after a commit, with the events it appended per run."""
        for run_id, items in appended.items():
            for queue in self._followers.get(run_id, ()):
                for item in items:
                    queue.put_nowait(item)

    async def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[StoredEvent]:
        """Yield the run's events after ``after_seq`` until (and including) the next ``done``."""
        live: asyncio.Queue[StoredEvent] = asyncio.Queue()
        self._followers[run_id].add(live)  # before reading the backlog, so nothing falls between
        try:
            seq = after_seq
            while True:
                for item in await self.store.read_events(run_id, seq):
                    seq = item.seq
                    yield item
                    if item.event == DONE:
                        return
                while True:
                    try:
                        item = await asyncio.wait_for(live.get(), _FALLBACK_POLL_S)
                    except TimeoutError:
                        break  # nothing in memory: look in the store (another writer?)
                    if item is _POKE:
                        break  # new events from another process: read them from the store
                    if item.seq <= seq:
                        continue
                    if item.seq != seq + 1:
                        break  # a gap: read it from the store in order
                    seq = item.seq
                    yield item
                    if item.event == DONE:
                        return
        finally:
            self._followers[run_id].discard(live)
            if not self._followers[run_id]:
                self._followers.pop(run_id, None)


def sse_frame(item: StoredEvent) -> bytes:
    return f"event: {item.event}\ndata: {item.data}\n\n".encode()


def sse_error_frame(message: str) -> bytes:
    payload = json.dumps({"message": message, "type": "server_error", "param": None, "code": "server_error"})
    return f"event: error\ndata: {payload}\n\n".encode()
