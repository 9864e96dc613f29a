"""The MetadataStore contract: what every backend must do, parametrized over the backends.

Each test takes a ``store`` opened by the backend's factory below; a new backend (PostgreSQL)
adds one entry to ``BACKENDS`` and must pass all of it. The conditional writes are the part
the services and the run engine rely on for their invariants (a status moves once, one of N
racing writers wins, counters add up, no update of one field loses another).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from spindle.store.base import (
    MISSING,
    AnyOf,
    AppendEvent,
    Conflict,
    Delete,
    MetadataStore,
    Put,
    Update,
    diff_update,
    retry_on_conflict,
)
from spindle.store.sqlite import SQLiteStore


async def _sqlite(tmp: Path) -> MetadataStore:
    store = SQLiteStore(tmp / "contract.db")
    await store.open()
    return store


BACKENDS: dict[str, Callable[[Path], Awaitable[MetadataStore]]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    factory = BACKENDS[request.param]

    def opener() -> Any:
        return _Opened(factory, tmp_path)

    return opener


class _Opened:
    def __init__(self, factory: Callable[[Path], Awaitable[MetadataStore]], tmp: Path) -> None:
        self.factory, self.tmp = factory, tmp

    async def __aenter__(self) -> MetadataStore:
        self.store = await self.factory(self.tmp)
        return self.store

    async def __aexit__(self, *_exc: object) -> None:
        await self.store.close()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _stored(store: MetadataStore, object_id: str) -> dict[str, Any] | None:
    return await store.get("thing", object_id, "p")


def test_update_merges_fields_and_keeps_the_rest(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.put("thing", {"id": "a", "created_at": 1, "name": "x", "metadata": {"k": "v"}}, "p")
            await store.write([Update("thing", "a", fields={"name": "y"})])
            assert await _stored(store, "a") == {"id": "a", "created_at": 1, "name": "y", "metadata": {"k": "v"}}

    run(scenario())


def test_failed_expect_undoes_the_whole_write(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.put("thing", {"id": "a", "created_at": 1, "status": "queued"}, "p")
            with pytest.raises(Conflict) as info:
                await store.write([Put("thing", {"id": "b", "created_at": 1}, "p"),
                                   AppendEvent("run_x", "e", {"n": 1}),
                                   Update("thing", "a", fields={"status": "done"}, expect={"status": "in_progress"})])
            assert info.value.object_id == "a" and "status" in info.value.reason
            assert await _stored(store, "b") is None
            assert await store.last_event_seq("run_x") == 0
            assert (await _stored(store, "a") or {})["status"] == "queued"
            await store.write([Update("thing", "a", fields={"status": "done"},
                                      expect={"status": AnyOf(("queued", "in_progress"))})])
            assert (await _stored(store, "a") or {})["status"] == "done"

    run(scenario())


def test_update_of_a_missing_object_is_a_conflict(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            with pytest.raises(Conflict):
                await store.write([Update("thing", "nope", fields={"x": 1})])

    run(scenario())


def test_expect_missing_field(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.put("thing", {"id": "a", "created_at": 1}, "p")
            await store.write([Update("thing", "a", fields={"owner": "me"}, expect={"owner": MISSING})])
            with pytest.raises(Conflict):
                await store.write([Update("thing", "a", fields={"owner": "you"}, expect={"owner": MISSING})])

    run(scenario())


def test_create_only_and_conditional_delete(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.write([Put("thing", {"id": "m", "created_at": 1, "run_id": "r1"}, "p", create_only=True)])
            with pytest.raises(Conflict):
                await store.write([Put("thing", {"id": "m", "created_at": 1, "run_id": "r2"}, "p", create_only=True)])
            await store.write([Delete("thing", "m", when={"run_id": "r2"})])  # not r2's: kept
            assert (await _stored(store, "m") or {})["run_id"] == "r1"
            await store.write([Delete("thing", "m", when={"run_id": "r1"})])
            assert await _stored(store, "m") is None

    run(scenario())


def test_counters_add_up_under_concurrent_writers(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.put("thing", {"id": "c", "created_at": 1, "file_counts": {"completed": 0}}, "p")
            await asyncio.gather(*(store.write([Update("thing", "c", add={"file_counts.completed": 1,
                                                                          "file_counts.total": 2})])
                                   for _ in range(100)))
            assert (await _stored(store, "c") or {})["file_counts"] == {"completed": 100, "total": 200}

    run(scenario())


def test_exactly_one_of_racing_compare_and_sets_wins(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.put("thing", {"id": "r", "created_at": 1, "status": "requires_action"}, "p")

            async def racer(i: int) -> bool:
                try:
                    await store.write([Update("thing", "r", fields={"status": "queued", "winner": i},
                                              expect={"status": "requires_action"}),
                                       AppendEvent("run_r", "step.completed", {"by": i})])
                    return True
                except Conflict:
                    return False

            outcomes = await asyncio.gather(*(racer(i) for i in range(20)))
            assert outcomes.count(True) == 1
            events = await store.read_events("run_r")
            assert len(events) == 1
            assert f'"by":{outcomes.index(True)}' in events[0].data.replace(" ", "")

    run(scenario())


def test_read_compute_write_retries_lose_no_update(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.put("thing", {"id": "l", "created_at": 1, "items": []}, "p")

            async def append(i: int) -> None:
                async def attempt() -> None:
                    before = await store.get("thing", "l", "p")
                    assert before is not None
                    after = {**before, "items": [*before["items"], i]}
                    await store.write([diff_update("thing", before, after, cas=("items",))])

                await retry_on_conflict(attempt, attempts=100)

            await asyncio.gather(*(append(i) for i in range(15)))
            assert sorted((await _stored(store, "l") or {})["items"]) == list(range(15))

    run(scenario())


def test_writes_keep_their_snapshot(open_store: Any) -> None:
    """A caller may change its dict right after handing it over; the store writes what it got."""
    async def scenario() -> None:
        async with open_store() as store:
            await store.put("thing", {"id": "s", "created_at": 1}, "p")
            fields = {"tags": ["a"]}
            pending = asyncio.ensure_future(store.write([Update("thing", "s", fields=fields)]))
            await asyncio.sleep(0)  # the write has started (and is waiting for its commit)
            fields["tags"].append("b")
            await pending
            assert (await _stored(store, "s") or {})["tags"] == ["a"]

    run(scenario())
