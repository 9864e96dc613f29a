"""The background ingestion worker: parse → chunk → embed → index, many files in parallel.

Durable by construction: a vector store file is written ``in_progress`` (unowned: queued)
before it is handed to a worker, and the job only ever moves it to ``completed``/``failed``.
Before ingesting a file a process claims it in the metadata store (``claims``: owner id and
lease, renewed while it works), so with several processes on one database each file is
ingested by one of them, and the files of a process that died are found by the others'
sweeps once its leases run out and finished there. The in-memory queue is only a shortcut
for files added through this process; the store is the authority. Re-ingesting replaces
whatever a cut-off run left in the index. Cancellation and deletion are noticed when the
file's ingestion ends: its chunks are then removed instead of being published.

How many files run at once is bounded twice: ``ingest_concurrency`` files (threads that
mostly wait for the embedder, which batches windows across all of them) and
``ingest_memory_mb`` of file text held in memory, so thousands of one-paragraph files keep
the embedder's batches full while a few huge ones do not exhaust memory.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spindle.engine import leases
from spindle.retrieval import pipeline
from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.embedding import EmbeddingError
from spindle.retrieval.errors import IngestError
from spindle.retrieval.parsers.pool import pool_for
from spindle.retrieval.settings import RetrievalSettings
from spindle.runtime import Runtime
from spindle.vector_stores import claims
from spindle.vector_stores.indexes import IndexRegistry, StoreDropped
from spindle.vector_stores.ledger import Ledger

log = logging.getLogger(__name__)

# Objects handed over with queued files (``submit(known=...)``) are kept for at most this many
# files; beyond it a queued file is read from the store when its turn comes.
_KNOWN_MAX = 20_000
# Before parsing, a file's text is estimated at this many times its size on disk (text plus
# the overlapping chunk copies); the estimate is corrected once the file is parsed.
_ESTIMATE_FACTOR = 3


@dataclass
class _Job:
    store_id: str
    file_key: str
    obj: dict[str, Any]
    file_obj: dict[str, Any]
    cost: int = 0


class IngestWorker:
    def __init__(self, runtime: Runtime, ledger: Ledger, indexes: IndexRegistry, settings: RetrievalSettings) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.indexes = indexes
        self.settings = settings
        # One owner per worker, not per process: tests (and embedders of the app) may run two
        # apps in one process, and each must see the other's claims as someone else's.
        self.owner = f"{leases.process_owner()}.{secrets.token_hex(3)}"
        self.lease_s = settings.ingest_lease_s
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._pending: Counter[str] = Counter()  # queued here, not yet claimed
        # file key -> (its row as written by whoever queued it, its file object or None)
        self._known: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        self._held: dict[tuple[str, str | None], float] = {}  # claimed here: (file, attempt) → lease deadline
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max(1, settings.ingest_concurrency))
        self._budget = claims.ByteBudget(settings.ingest_memory_mb * 2**20)
        self._background: list[asyncio.Task[None]] = []
        self._warming: asyncio.Future[None] | None = None

    async def start(self) -> None:
        # Parser processes start in the background: the server is up at once, and the first
        # files find them ready instead of waiting for one to start.
        self._warming = asyncio.get_running_loop().run_in_executor(None, pool_for(self.settings).warm)
        self._background.append(asyncio.create_task(self._dispatch(), name="vs-ingest-dispatch"))
        # A store only this process uses: every file left in_progress was an earlier start's.
        found = await self.sweep(trust_leases=self.runtime.store.shared)
        if found:
            log.info("resuming ingestion of %d vector store files", found)
        self._background.append(asyncio.create_task(self._sweep_forever(), name="vs-ingest-sweep"))
        self._background.append(asyncio.create_task(self._renew_forever(), name="vs-ingest-renew"))

    async def stop(self) -> None:
        """Stop claiming, stop what runs and hand its files back: they stay ``in_progress``
        with their lease ended, so another process (or the next start) takes them at once. A
        crash skips the hand-back; then the lease runs out instead."""
        if self._warming is not None:
            await asyncio.gather(self._warming, return_exceptions=True)
        held = list(self._held)  # before the cancelled jobs forget them
        tasks = [*self._background, *self._running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background.clear()
        self._running.clear()
        self._held.clear()
        for key, attempt in held:
            try:
                await claims.release(self.runtime.store, key, self.owner, attempt)
            except Exception:  # the lease runs out instead
                log.warning("handing back the ingestion of %s failed", key, exc_info=True)

    def submit(self, store_id: str, file_key: str,
               known: tuple[dict[str, Any], dict[str, Any] | None] | None = None) -> None:
        """Queue a file. ``known``: its row as the caller just wrote or read it (and its file
        object): the claim is then tried on that row without reading it again; the store's
        compare-and-set still decides, and a conflict reads the row as usual."""
        self._pending[file_key] += 1
        if known is not None and len(self._known) < _KNOWN_MAX:
            row, file_obj = known
            self._known[file_key] = (dict(row), dict(file_obj) if file_obj is not None else None)
        self._queue.put_nowait((store_id, file_key))

    def backlog(self) -> int:
        """Files submitted here and not yet taken up (for /metrics)."""
        return self._queue.qsize()

    # -- claiming ----------------------------------------------------------------------------

    async def sweep(self, trust_leases: bool = True) -> int:
        """Queue here the store's in-progress files that no live process holds; returns how many."""
        found = 0
        for obj in await self.runtime.store.scan("vector_store_file", {"status": "in_progress"}):
            key = obj["id"]
            if (key, obj.get("_attempt")) in self._held or self._pending[key]:
                continue
            if claims.claimable(obj, self.owner, trust_leases=trust_leases, queued_grace_s=self.lease_s / 3):
                self.submit(obj["vector_store_id"], key, known=(obj, None))
                found += 1
        return found

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.sweep(trust_leases=True)
            except Exception:  # the next sweep tries again
                log.exception("ingestion sweep failed")

    async def _renew_forever(self) -> None:
        """Renew leases that are a third gone; a file that is no longer ours is left to its
        job, whose final write then finds it moved."""
        while True:
            await asyncio.sleep(self.lease_s / 6)
            soon = time.time() + 2 * self.lease_s / 3
            for (key, attempt), until in list(self._held.items()):
                if until > soon:
                    continue
                try:
                    renewed = await claims.renew(self.runtime.store, key, self.owner, attempt, self.lease_s)
                except Exception:
                    log.exception("renewing the ingestion lease of %s failed", key)
                    continue
                if (key, attempt) in self._held:
                    if renewed is None:
                        self._held.pop((key, attempt), None)
                    else:
                        self._held[(key, attempt)] = renewed

    async def _claim(self, store_id: str, file_key: str) -> _Job | None:
        known = self._known.pop(file_key, None)
        claimed: dict[str, Any] | None = None
        file_obj: dict[str, Any] | None = None
        if known is not None and self._may_claim(store_id, known[0]):
            # The row as it was written or scanned: if it is still exactly that, this claim
            # lands without a read; if anything moved, the read below decides.
            obj, file_obj = known
            claimed = await claims.claim(self.runtime.store, obj, self.owner, self.lease_s)
        if claimed is None:
            current = await self.runtime.store.get("vector_store_file", file_key, None)
            if current is None or not self._may_claim(store_id, current):
                return None  # gone, finished, being ingested here already or by a live process elsewhere
            obj = current
            claimed = await claims.claim(self.runtime.store, obj, self.owner, self.lease_s)
            if claimed is None:
                return None  # another process claimed it (or it moved) first
        if obj.get(claims.OWNER):
            log.info("took over the ingestion of %s from %s (lease ended or process gone)", file_key,
                     obj[claims.OWNER])
        self._held[(file_key, claimed.get("_attempt"))] = float(claimed[claims.LEASE_UNTIL])
        if file_obj is None or file_obj.get("id") != claimed["_file_id"]:
            file_obj = await self.runtime.store.get("file", claimed["_file_id"], None)
        return _Job(store_id, file_key, claimed, file_obj or {})

    def _may_claim(self, store_id: str, obj: dict[str, Any]) -> bool:
        if obj["status"] != "in_progress" or self.indexes.is_dropped(store_id):
            return False
        if (obj["id"], obj.get("_attempt")) in self._held:
            return False  # being ingested here already
        return claims.claimable(obj, self.owner, trust_leases=True, queued_grace_s=0)

    async def _dispatch(self) -> None:
        """Take queued files in order: a slot, a claim, then room in the memory budget."""
        while True:
            store_id, file_key = await self._queue.get()
            await self._slots.acquire()
            try:
                job = await self._claim(store_id, file_key)
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception:
                log.exception("claiming %s failed; a later sweep retries it", file_key)
                job = None
            finally:
                self._pending[file_key] -= 1
                if self._pending[file_key] <= 0:
                    del self._pending[file_key]
            if job is None:
                self._slots.release()
                continue
            estimate = int(job.file_obj.get("bytes") or 0) * _ESTIMATE_FACTOR
            job.cost = await self._budget.acquire(estimate)
            task = asyncio.create_task(self._run(job), name=f"vs-ingest:{file_key}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, job: _Job) -> None:
        try:
            await self._ingest(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not kill the worker; the file is marked failed
            log.exception("ingesting %s failed unexpectedly", job.file_key)
            await self._fail(job, "server_error", "The server had an error while processing the file.")
        finally:
            self._held.pop((job.file_key, job.obj.get("_attempt")), None)
            self._slots.release()
            await asyncio.shield(self._budget.release(job.cost))

    # -- one file ------------------------------------------------------------------------------

    async def _ingest(self, job: _Job) -> None:
        store_id, file_key, obj = job.store_id, job.file_key, job.obj
        file_id = obj["_file_id"]
        attempt = obj.get("_attempt")
        if not job.file_obj:
            await self._fail(job, "invalid_file", f"File {file_id} no longer exists.")
            return
        path = await self.runtime.blobs.local_path(file_id)
        static = obj["chunking_strategy"]["static"]
        strategy = ChunkingStrategy(static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])
        attributes = dict(obj.get("attributes") or {})
        filename = str(job.file_obj["filename"])
        loop = asyncio.get_running_loop()

        def prepared(held: int) -> None:  # called in the ingest thread once the text is in memory
            extra = self._budget.fit(held) - job.cost
            if extra > 0:
                job.cost += extra
                loop.call_soon_threadsafe(self._budget.charge, extra)

        result = await self._pipeline(job, path, filename, attributes, strategy, prepared)
        if result is None:
            return
        done = await self.ledger.change(store_id, file_key, status="completed", expect=("in_progress",),
                                        attempt=attempt, owner=self.owner, usage_bytes=result.usage_bytes,
                                        known=obj)
        try:
            index = await self.indexes.get(store_id)
        except StoreDropped:
            return
        if done is None:  # cancelled, removed, re-added or taken over while it was being ingested
            current = await self.runtime.store.get("vector_store_file", file_key, None)
            if current is None or (current["status"] != "in_progress" and current.get(claims.OWNER) == self.owner):
                await self.indexes.run_io(lambda: index.delete_file(file_id))
            # A re-added file has its own job queued, which replaces these chunks; one that
            # another process took over and finished keeps them (the same file, ingested twice).
            return
        if done.get("attributes") != attributes:  # updated while ingesting
            await self.indexes.run_io(lambda: index.set_attributes(file_id, done.get("attributes") or {}))

    async def _pipeline(self, job: _Job, path: Path, filename: str, attributes: dict[str, Any],
                        strategy: ChunkingStrategy, prepared: Any) -> pipeline.IngestResult | None:
        file_id = job.obj["_file_id"]
        settings = self.settings

        def work(index: Any) -> pipeline.IngestResult:
            # The path, not the bytes: the parser process reads the file, so an upload of
            # hundreds of MB never sits in this process's memory.
            return pipeline.ingest(index, self.indexes.embedder, file_id, filename, path, attributes, strategy,
                                   settings, on_prepared=prepared)

        try:
            return await self.indexes.run_ingest(job.store_id, work)
        except StoreDropped:
            return None
        except IngestError as exc:
            await self._fail(job, exc.code, exc.message)
        except EmbeddingError as exc:
            log.warning("embedding %s failed: %s", job.file_key, exc)
            await self._fail(job, "server_error", f"Embedding failed: {exc}")
        return None

    async def _fail(self, job: _Job, code: str, message: str) -> None:
        await self.ledger.change(job.store_id, job.file_key, status="failed", expect=("in_progress",),
                                 attempt=job.obj.get("_attempt"), owner=self.owner,
                                 last_error={"code": code, "message": message}, known=job.obj)
