"""The completion write of an ingestion (``Ledger.change(known=...)``) on SQLite and PostgreSQL:
without reading when the store still holds what the claim wrote, and correct — one status
move, counters that add up — when it does not (attributes changed, batch gone, file taken
over, re-added or cancelled meanwhile)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle.ids import now
from spindle.store.base import Delete, MetadataStore, Put, Update
from spindle.vector_stores import claims
from spindle.vector_stores import objects as obj_
from spindle.vector_stores.ledger import Ledger
from tests.retrieval.test_ingest_claims import A, B, _run
from tests.unit.test_store_contract import _SERVER, BACKENDS

VS = "vs_ledger"


@pytest.fixture(params=sorted(BACKENDS), scope="module")
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param
    if request.param == "postgres" and _SERVER:
        _SERVER.pop().stop()


async def _claimed(store: MetadataStore, files: int = 2) -> list[dict[str, Any]]:
    """A store with one batch of ``files`` files in progress, each claimed by ``A``."""
    vs = obj_.new_store(VS, "ledger", None, None, now())
    vs["file_counts"].update(in_progress=files, total=files)
    batch = obj_.new_batch("vsfb_1", VS, now())
    batch["file_counts"].update(in_progress=files, total=files)
    items = [obj_.new_file(VS, f"file-{i}", {"type": "static", "static": {}}, {"n": i}, "vsfb_1", now())
             for i in range(files)]
    await store.write([Put("vector_store", vs, "default"), Put("vector_store_file_batch", batch, "default", parent=VS),
                       *(Put("vector_store_file", item, "default", parent=VS) for item in items)])
    held = []
    for item in items:
        claimed = await claims.claim(store, item, A, 30)
        assert claimed is not None
        held.append(claimed)
    return held


class _Reads:
    """Counts ``get`` calls on a store (the fast path must make none)."""

    def __init__(self, store: MetadataStore) -> None:
        self.count = 0
        real = store.get

        async def get(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await real(*args, **kwargs)

        store.get = get  # type: ignore[method-assign]


async def _counts(store: MetadataStore, kind: str, key: str) -> tuple[int, int, int]:
    obj = await store.get(kind, key, None)
    assert obj is not None
    fc = obj["file_counts"]
    return fc["in_progress"], fc["completed"], fc["failed"]


def test_completion_as_claimed_writes_without_reading(backend: str, tmp_path: Path) -> None:
    async def body(store: MetadataStore) -> None:
        first, second = await _claimed(store)
        ledger = Ledger(store)
        reads = _Reads(store)
        done = await ledger.change(VS, first["id"], status="completed", expect=("in_progress",),
                                   attempt=first["_attempt"], owner=A, usage_bytes=100, known=first)
        failed = await ledger.change(VS, second["id"], status="failed", expect=("in_progress",),
                                     attempt=second["_attempt"], owner=A, known=second,
                                     last_error={"code": "invalid_file", "message": "no"})
        assert reads.count == 0
        assert done is not None and done["status"] == "completed" and done["attributes"] == {"n": 0}
        assert failed is not None and failed["last_error"]["code"] == "invalid_file"
        assert await _counts(store, "vector_store", VS) == (0, 1, 1)
        assert await _counts(store, "vector_store_file_batch", "vsfb_1") == (0, 1, 1)
        vs = await store.get("vector_store", VS, None)
        assert vs is not None and vs["usage_bytes"] == 100
        # The same completion again (a duplicate job) moves nothing: the file is no longer in progress.
        assert await ledger.change(VS, first["id"], status="completed", expect=("in_progress",),
                                   attempt=first["_attempt"], owner=A, usage_bytes=100, known=first) is None
        assert await _counts(store, "vector_store", VS) == (0, 1, 1)
    _run(backend, tmp_path, body)


def test_completion_after_changes_meanwhile_reads_and_decides_again(backend: str, tmp_path: Path) -> None:
    async def body(store: MetadataStore) -> None:
        first, second = await _claimed(store)
        ledger = Ledger(store)
        # attributes updated while the first file was ingested: the write still lands, and
        # returns the stored attributes (the caller then re-applies them to the index)
        await store.write([Update("vector_store_file", first["id"], fields={"attributes": {"n": 7}})])
        # the batch was removed meanwhile (its store's files stay counted on the store)
        await store.write([Delete("vector_store_file_batch", "vsfb_1")])
        reads = _Reads(store)
        done = await ledger.change(VS, first["id"], status="completed", expect=("in_progress",),
                                   attempt=first["_attempt"], owner=A, usage_bytes=40, known=first)
        assert reads.count >= 1  # the guard failed, so it read
        assert done is not None and done["status"] == "completed" and done["attributes"] == {"n": 7}
        assert await _counts(store, "vector_store", VS) == (1, 1, 0)
        # the second file was taken over by B (A's lease ran out): A's result is not written
        taken = await store.get("vector_store_file", second["id"], None)
        assert taken is not None
        await store.write([Update("vector_store_file", second["id"], fields={claims.OWNER: B})])
        assert await ledger.change(VS, second["id"], status="completed", expect=("in_progress",),
                                   attempt=second["_attempt"], owner=A, usage_bytes=40, known=second) is None
        assert await _counts(store, "vector_store", VS) == (1, 1, 0)
        vs = await store.get("vector_store", VS, None)
        assert vs is not None and vs["usage_bytes"] == 40
        stored = await store.get("vector_store_file", second["id"], None)
        assert stored is not None and stored["status"] == "in_progress" and stored[claims.OWNER] == B
    _run(backend, tmp_path, body)


def test_a_file_re_added_or_cancelled_meanwhile_is_not_completed(backend: str, tmp_path: Path) -> None:
    async def body(store: MetadataStore) -> None:
        first, second = await _claimed(store)
        ledger = Ledger(store)
        await store.write([Update("vector_store_file", first["id"], fields={"_attempt": "new-attempt"})])
        assert await ledger.change(VS, first["id"], status="completed", expect=("in_progress",),
                                   attempt=first["_attempt"], owner=A, usage_bytes=5, known=first) is None
        await ledger.change(VS, second["id"], status="cancelled", expect=("in_progress",))
        assert await ledger.change(VS, second["id"], status="completed", expect=("in_progress",),
                                   attempt=second["_attempt"], owner=A, usage_bytes=5, known=second) is None
        vs = await store.get("vector_store", VS, None)
        assert vs is not None and vs["usage_bytes"] == 0
        assert (vs["file_counts"]["in_progress"], vs["file_counts"]["completed"],
                vs["file_counts"]["cancelled"]) == (1, 0, 1)
    _run(backend, tmp_path, body)
