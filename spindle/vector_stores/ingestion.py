"""The background ingestion worker: parse → chunk → embed → index, files in parallel.

Durable by construction: a vector store file is written ``in_progress`` before its job is
queued, and the job only ever moves it to ``completed``/``failed``. The queue itself is in
memory; at start every ``in_progress`` file in the metadata store is queued again, so after a
crash or restart no file stays ``in_progress``. Re-ingesting replaces whatever a cut-off run
left in the index. Cancellation and deletion are noticed when the file's ingestion ends: its
chunks are then removed instead of being published.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from spindle.retrieval import pipeline
from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.embedding import EmbeddingError
from spindle.retrieval.errors import IngestError
from spindle.retrieval.parsers.pool import pool_for
from spindle.retrieval.settings import RetrievalSettings
from spindle.runtime import Runtime
from spindle.vector_stores.indexes import IndexRegistry, StoreDropped
from spindle.vector_stores.ledger import Ledger

log = logging.getLogger(__name__)


class IngestWorker:
    def __init__(self, runtime: Runtime, ledger: Ledger, indexes: IndexRegistry, settings: RetrievalSettings) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.indexes = indexes
        self.settings = settings
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._warming: asyncio.Future[None] | None = None

    async def start(self) -> None:
        # Parser processes start in the background: the server is up at once, and the first
        # files find them ready instead of waiting for one to start.
        self._warming = asyncio.get_running_loop().run_in_executor(None, pool_for(self.settings).warm)
        for i in range(max(1, self.settings.ingest_concurrency)):
            self._tasks.append(asyncio.create_task(self._consume(), name=f"vs-ingest-{i}"))
        pending = await self.runtime.store.scan("vector_store_file", {"status": "in_progress"})
        for obj in pending:
            self.submit(obj["vector_store_id"], obj["id"])
        if pending:
            log.info("resuming ingestion of %d vector store files", len(pending))

    async def stop(self) -> None:
        if self._warming is not None:
            await asyncio.gather(self._warming, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def submit(self, store_id: str, file_key: str) -> None:
        self._queue.put_nowait((store_id, file_key))

    def backlog(self) -> int:
        """Files submitted here and not yet taken up (for /metrics)."""
        return self._queue.qsize()

    async def _consume(self) -> None:
        while True:
            store_id, file_key = await self._queue.get()
            try:
                await self.process(store_id, file_key)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the worker; the file is marked failed
                log.exception("ingesting %s failed unexpectedly", file_key)
                await self._fail(store_id, file_key, "server_error", "The server had an error while processing the file.")
            finally:
                self._queue.task_done()

    async def process(self, store_id: str, file_key: str) -> None:
        obj = await self.runtime.store.get("vector_store_file", file_key, None)
        if obj is None or obj["status"] != "in_progress" or self.indexes.is_dropped(store_id):
            return
        file_id = obj["_file_id"]
        attempt = obj.get("_attempt")
        file_obj = await self.runtime.store.get("file", file_id, None)
        if file_obj is None:
            await self._fail(store_id, file_key, "invalid_file", f"File {file_id} no longer exists.")
            return
        path = await self.runtime.blobs.local_path(file_id)
        static = obj["chunking_strategy"]["static"]
        strategy = ChunkingStrategy(static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])
        attributes = dict(obj.get("attributes") or {})
        filename = str(file_obj["filename"])
        settings = self.settings

        def work(index: Any) -> pipeline.IngestResult:
            # The path, not the bytes: the parser process reads the file, so an upload of
            # hundreds of MB never sits in this process's memory.
            return pipeline.ingest(index, self.indexes.embedder, file_id, filename, path, attributes, strategy,
                                   settings)

        try:
            result = await self.indexes.run_ingest(store_id, work)
        except StoreDropped:
            return
        except IngestError as exc:
            await self._fail(store_id, file_key, exc.code, exc.message, attempt)
            return
        except EmbeddingError as exc:
            log.warning("embedding %s failed: %s", file_key, exc)
            await self._fail(store_id, file_key, "server_error", f"Embedding failed: {exc}", attempt)
            return
        done = await self.ledger.change(store_id, file_key, status="completed", expect=("in_progress",),
                                        attempt=attempt, usage_bytes=result.usage_bytes)
        try:
            index = await self.indexes.get(store_id)
        except StoreDropped:
            return
        if done is None:  # cancelled, removed or re-added while it was being ingested
            current = await self.runtime.store.get("vector_store_file", file_key, None)
            if current is None or current["status"] != "in_progress":
                await self.indexes.run_io(lambda: index.delete_file(file_id))
            return  # a re-added file has its own job queued, which replaces these chunks
        if done.get("attributes") != attributes:  # updated while ingesting
            await self.indexes.run_io(lambda: index.set_attributes(file_id, done.get("attributes") or {}))

    async def _fail(self, store_id: str, file_key: str, code: str, message: str, attempt: str | None = None) -> None:
        await self.ledger.change(store_id, file_key, status="failed", expect=("in_progress",), attempt=attempt,
                                 last_error={"code": code, "message": message})
