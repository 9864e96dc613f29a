"""Ingestion claims held by the metadata store (SQLite and PostgreSQL): one claimant wins, a
live lease is respected, an expired one is taken over, and the process that lost a file can
neither renew it nor write its result; and the memory budget that bounds files in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle.ids import now
from spindle.store.base import MetadataStore, Put
from spindle.vector_stores import claims
from spindle.vector_stores import objects as obj_
from spindle.vector_stores.ledger import Ledger
from tests.unit.test_store_contract import _SERVER, BACKENDS

A, B = "host/boot/ns|1|aaaa.01", "host/boot/ns|2|bbbb.02"  # owners on no machine we know: leases decide


@pytest.fixture(params=sorted(BACKENDS), scope="module")
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param
    if request.param == "postgres" and _SERVER:
        _SERVER.pop().stop()


def _run(backend: str, tmp_path: Path, body: Any) -> None:
    async def main() -> None:
        store = await BACKENDS[backend](tmp_path, "c_" + tmp_path.name[-10:].replace("-", "_").lower())
        try:
            await body(store)
        finally:
            await store.close()
    asyncio.run(main())


async def _queued_file(store: MetadataStore, created_at: int | None = None) -> dict[str, Any]:
    vs = obj_.new_store("vs_claims", "claims", None, None, now())
    vs["file_counts"].update(in_progress=1, total=1)
    item = obj_.new_file("vs_claims", "file-1", {"type": "static", "static": {}}, {}, None,
                         now() if created_at is None else created_at)
    await store.write([Put("vector_store", vs, "default"), Put("vector_store_file", item, "default",
                                                               parent="vs_claims")])
    return item


def test_of_two_racing_claims_one_wins(backend: str, tmp_path: Path) -> None:
    async def body(store: MetadataStore) -> None:
        item = await _queued_file(store)
        results = await asyncio.gather(claims.claim(store, item, A, 30), claims.claim(store, item, B, 30))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        stored = await store.get("vector_store_file", item["id"], None)
        assert stored is not None and stored[claims.OWNER] == winners[0][claims.OWNER]
        # the loser, reading again, sees a live lease and leaves it alone
        loser = B if winners[0][claims.OWNER] == A else A
        assert not claims.claimable(stored, loser, trust_leases=True, queued_grace_s=0)
        assert await claims.claim(store, item, loser, 30) is None  # a stale read never wins
    _run(backend, tmp_path, body)


def test_an_expired_lease_is_taken_over_and_the_old_owner_loses_the_file(backend: str, tmp_path: Path) -> None:
    async def body(store: MetadataStore) -> None:
        item = await _queued_file(store)
        held = await claims.claim(store, item, A, 0.3)
        assert held is not None
        assert await claims.renew(store, item["id"], A, item["_attempt"], 0.3) is not None  # A is alive
        stored = await store.get("vector_store_file", item["id"], None)
        assert stored is not None and not claims.claimable(stored, B, trust_leases=True, queued_grace_s=0)
        await asyncio.sleep(0.45)  # A stops renewing: it died
        stored = await store.get("vector_store_file", item["id"], None)
        assert stored is not None and claims.claimable(stored, B, trust_leases=True, queued_grace_s=0)
        assert await claims.claim(store, stored, B, 30) is not None
        assert await claims.renew(store, item["id"], A, item["_attempt"], 30) is None
        ledger = Ledger(store)
        # A comes back from a long pause and finishes: its result is not written, nothing counted
        assert await ledger.change("vs_claims", item["id"], status="completed", expect=("in_progress",),
                                   attempt=item["_attempt"], owner=A, usage_bytes=10) is None
        vs = await store.get("vector_store", "vs_claims", None)
        assert vs is not None and vs["file_counts"]["completed"] == 0 and vs["usage_bytes"] == 0
        done = await ledger.change("vs_claims", item["id"], status="completed", expect=("in_progress",),
                                   attempt=item["_attempt"], owner=B, usage_bytes=10)
        assert done is not None and done["status"] == "completed"
        vs = await store.get("vector_store", "vs_claims", None)
        assert vs is not None
        assert (vs["file_counts"]["completed"], vs["file_counts"]["in_progress"], vs["usage_bytes"]) == (1, 0, 10)
        stored = await store.get("vector_store_file", item["id"], None)
        assert stored is not None and not claims.claimable(stored, A, trust_leases=False, queued_grace_s=0)
    _run(backend, tmp_path, body)


def test_a_file_handed_back_at_shutdown_is_claimable_at_once(backend: str, tmp_path: Path) -> None:
    async def body(store: MetadataStore) -> None:
        item = await _queued_file(store)
        assert await claims.claim(store, item, A, 60) is not None
        assert not await claims.release(store, item["id"], B, item["_attempt"])  # not B's to hand back
        stored = await store.get("vector_store_file", item["id"], None)
        assert stored is not None and not claims.claimable(stored, B, trust_leases=True, queued_grace_s=0)
        assert await claims.release(store, item["id"], A, item["_attempt"])
        stored = await store.get("vector_store_file", item["id"], None)
        assert stored is not None and claims.claimable(stored, B, trust_leases=True, queued_grace_s=0)
        assert await claims.claim(store, stored, B, 60) is not None
    _run(backend, tmp_path, body)


def test_a_queued_file_is_left_to_its_process_for_the_grace_time(backend: str, tmp_path: Path) -> None:
    async def body(store: MetadataStore) -> None:
        fresh = await _queued_file(store)
        assert not claims.claimable(fresh, B, trust_leases=True, queued_grace_s=5)
        assert claims.claimable(fresh, B, trust_leases=False, queued_grace_s=5)  # nobody else uses the store
        old = dict(fresh, created_at=now() - 10)
        assert claims.claimable(old, B, trust_leases=True, queued_grace_s=5)
        assert not claims.claimable(dict(old, status="completed"), B, trust_leases=False, queued_grace_s=0)
    _run(backend, tmp_path, body)


def test_the_byte_budget_holds_back_files_until_text_is_released() -> None:
    async def main() -> None:
        budget = claims.ByteBudget(100)
        assert await budget.acquire(60) == 60
        waiting = asyncio.create_task(budget.acquire(50))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # 60 + 50 > 100
        await budget.release(60)
        assert await asyncio.wait_for(waiting, 1) == 50
        big = asyncio.create_task(budget.acquire(10_000))  # larger than the budget: runs alone
        await asyncio.sleep(0.05)
        assert not big.done()
        await budget.release(50)
        assert await asyncio.wait_for(big, 1) == 100 and budget.used == 100
        budget.charge(30)  # a running file's text turned out larger: later files wait for it too
        late = asyncio.create_task(budget.acquire(1))
        await asyncio.sleep(0.05)
        assert not late.done()
        await budget.release(130)
        assert await asyncio.wait_for(late, 1) == 1
    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 5
