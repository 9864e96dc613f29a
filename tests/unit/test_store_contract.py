"""The MetadataStore contract: what every backend must do, parametrized over the backends.

Each test opens a store with the backend's factory below (SQLite in a temp dir; PostgreSQL:
a fresh database on a throwaway server, tests/pgserver.py); a new backend adds one entry to
``BACKENDS`` and must pass all of it. The conditional writes are the part
the services and the run engine rely on for their invariants (a status moves once, one of N
racing writers wins, counters add up, no update of one field loses another).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle.store.base import (
    MISSING,
    AnyOf,
    AppendEvent,
    Conflict,
    CursorNotFound,
    Delete,
    DeleteChildren,
    ListQuery,
    MetadataStore,
    Put,
    Update,
    diff_update,
    retry_on_conflict,
)
from spindle.store.postgres import PostgresStore
from spindle.store.sqlite import SQLiteStore
from tests.pgserver import PostgresServer


async def _sqlite(tmp: Path, _name: str) -> MetadataStore:
    store = SQLiteStore(tmp / "contract.db")
    await store.open()
    return store


async def _postgres(_tmp: Path, name: str) -> MetadataStore:
    store = PostgresStore(_pg().create_database(name))
    await store.open()
    return store


BACKENDS: dict[str, Callable[[Path, str], Awaitable[MetadataStore]]] = {"sqlite": _sqlite, "postgres": _postgres}
_SERVER: list[PostgresServer] = []


def _pg() -> PostgresServer:
    if not _SERVER:
        _SERVER.append(PostgresServer().start())
    return _SERVER[0]


@pytest.fixture(scope="module", autouse=True)
def _stop_pg() -> Iterator[None]:
    yield
    while _SERVER:
        _SERVER.pop().stop()


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    factory = BACKENDS[request.param]
    name = "c_" + secrets.token_hex(6)

    def opener() -> Any:
        return _Opened(factory, tmp_path, name)

    return opener


class _Opened:
    def __init__(self, factory: Callable[[Path, str], Awaitable[MetadataStore]], tmp: Path, name: str) -> None:
        self.factory, self.tmp, self.name = factory, tmp, name

    async def __aenter__(self) -> MetadataStore:
        self.store = await self.factory(self.tmp, self.name)
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


def test_pagination_both_orders_and_cursors(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            for i in range(7):
                await store.put("thing", {"id": f"t{i}", "created_at": 1, "n": i % 2}, "p1")
            await store.put("thing", {"id": "other", "created_at": 1}, "p2")

            async def ids(**kw: Any) -> tuple[list[str], bool]:
                page = await store.page(ListQuery(kind="thing", project="p1", **kw))
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

    run(scenario())


def test_write_is_all_or_nothing_and_requests_are_independent(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.put("thing", {"id": "keep", "created_at": 1}, "p")
            broken = Put("thing", {"created_at": 1}, "p")  # no id: the op fails
            with pytest.raises(KeyError):
                await store.write([Put("thing", {"id": "half", "created_at": 1}, "p"), broken])
            assert await _stored(store, "half") is None
            results = await asyncio.gather(store.write([Put("thing", {"id": "a", "created_at": 1}, "p")]),
                                           store.write([Delete("thing", "keep"), broken]), return_exceptions=True)
            assert results[0] == [None] and isinstance(results[1], Exception)
            assert await _stored(store, "a") is not None and await _stored(store, "keep") is not None

    run(scenario())


def test_event_log_is_gap_free_and_ordered_under_concurrency(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            seqs = await store.write([AppendEvent("run_1", "a", {"x": 1}), AppendEvent("run_1", "b", "raw"),
                                      AppendEvent("run_2", "c", {})])
            assert seqs == [1, 2, 1]
            events = await store.read_events("run_1", after_seq=1)
            assert [(e.seq, e.event, e.data) for e in events] == [(2, "b", "raw")]
            got = await asyncio.gather(*(store.write([AppendEvent("run_3", "e", {"i": i}),
                                                      AppendEvent("run_3", "e", {"i": i})]) for i in range(40)))
            assert sorted(s for pair in got for s in pair) == list(range(1, 81))
            assert all(b == a + 1 for a, b in got)  # one write's events are adjacent
            assert [e.seq for e in await store.read_events("run_3", limit=1000)] == list(range(1, 81))
            assert await store.last_event_seq("run_3") == 80 and await store.last_event_seq("nope") == 0

    run(scenario())


def test_scan_filters_locate_scoping_and_deletes(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            await store.write([
                Put("run", {"id": "r1", "created_at": 1, "status": "queued", "n": 1, "flag": True,
                            "deep": {"x": "y"}}, "p1", parent="th1"),
                Put("run", {"id": "r2", "created_at": 2, "status": "completed", "n": 2, "flag": False,
                            "tag": None}, "p1", parent="th1"),
                Put("run", {"id": "r3", "created_at": 3, "status": "in_progress", "n": 3}, "p2", parent="th2"),
                AppendEvent("r1", "e", {}), AppendEvent("r3", "e", {})])

            async def ids(**kw: Any) -> list[str]:
                return [o["id"] for o in await store.scan("run", **kw)]

            assert await ids() == ["r1", "r2", "r3"]
            assert await ids(where={"status": ["queued", "in_progress"]}) == ["r1", "r3"]
            assert await ids(where={"n": 2}) == ["r2"] and await ids(where={"flag": True}) == ["r1"]
            assert await ids(where={"flag": False}) == ["r2"] and await ids(where={"deep.x": "y"}) == ["r1"]
            assert await ids(where={"tag": None}) == ["r1", "r2", "r3"]  # null and absent alike
            assert await ids(parent="th1", project="p1") == ["r1", "r2"] and await ids(project="p2") == ["r3"]
            assert await ids(mentions='"in_progress"') == ["r3"]
            assert await store.get("run", "r3", "p1") is None and await store.get("run", "r3", None) is not None
            assert await store.locate("run", "r1") == ("p1", "th1") and await store.locate("run", "zz") is None
            await store.write([Delete("run", "r3")])
            assert await store.last_event_seq("r3") == 0  # a run's log goes with it
            await store.write([DeleteChildren("run", "th1")])
            assert await ids() == [] and await store.last_event_seq("r1") == 0

    run(scenario())


def test_text_round_trips_exactly(open_store: Any) -> None:
    async def scenario() -> None:
        async with open_store() as store:
            # a lone surrogate too: sandbox output can carry one, and storing must not fail on it
            obj = {"id": "u", "created_at": 1, "text": "nul\u0000 emoji \U0001f600 lone \ud800 quote\" back\\ 中文",
                   "big": 2**62, "float": 0.1, "nested": {"b": [1, {"c": None}]}}
            await store.put("thing", obj, "p")
            assert await _stored(store, "u") == obj

    run(scenario())
