"""Open store indexes, the thread pools that touch them, and safe removal.

Every blocking call into ``spindle.retrieval`` (opening an index, ingesting, searching,
deleting) runs on one of two bounded pools, never on the event loop: ``ingest`` (one thread
per file being ingested) and ``io`` (searches and small index edits), so a long ingestion
never delays a search. A store being deleted is closed and removed only once the ingestions
running against it have finished.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from spindle.retrieval.embedding import Embedder
from spindle.retrieval.index.store import StoreIndex
from spindle.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreDropped(Exception):
    """The store was deleted; work against its index is abandoned."""


class IndexRegistry:
    def __init__(self, root: Path, settings: RetrievalSettings, embedder: Embedder) -> None:
        self.root = root
        self.settings = settings
        self.embedder = embedder
        self.ingest_pool = ThreadPoolExecutor(settings.ingest_concurrency, thread_name_prefix="spindle-ingest")
        self.io_pool = ThreadPoolExecutor(4, thread_name_prefix="spindle-vs-io")
        self._open: dict[str, StoreIndex] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._busy: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._dropped: set[str] = set()

    async def run_io(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, fn)

    async def get(self, store_id: str) -> StoreIndex:
        """The store's index, opened on first use (in a thread: opening replays vectors)."""
        if store_id in self._dropped:
            raise StoreDropped(store_id)
        found = self._open.get(store_id)
        if found is not None:
            return found
        lock = self._opening.setdefault(store_id, asyncio.Lock())
        async with lock:
            found = self._open.get(store_id)
            if store_id in self._dropped:
                raise StoreDropped(store_id)
            if found is None:
                directory = self.root / store_id
                found = await self.run_io(
                    lambda: StoreIndex(directory, self.settings, self.embedder.identity, self.embedder.dimensions)
                )
                self._open[store_id] = found
            return found

    async def run_ingest(self, store_id: str, fn: Callable[[StoreIndex], T]) -> T:
        """Run ``fn(index)`` on the ingest pool, counted so that ``drop`` waits for it.
        Raises ``StoreDropped`` once the store is being deleted."""
        if store_id in self._dropped:
            raise StoreDropped(store_id)
        # Counted before the first await: drop() either sees this job or the job sees the drop.
        self._busy[store_id] = self._busy.get(store_id, 0) + 1
        try:
            index = await self.get(store_id)
            return await asyncio.get_running_loop().run_in_executor(self.ingest_pool, lambda: fn(index))
        finally:
            self._busy[store_id] -= 1
            if not self._busy[store_id]:
                del self._busy[store_id]
                idle = self._idle.pop(store_id, None)
                if idle is not None:
                    idle.set()

    def is_dropped(self, store_id: str) -> bool:
        return store_id in self._dropped

    async def drop(self, store_id: str) -> None:
        """Forget a deleted store; its files go once running ingestions have finished."""
        self._dropped.add(store_id)
        while self._busy.get(store_id):
            await self._idle.setdefault(store_id, asyncio.Event()).wait()
        lock = self._opening.pop(store_id, None)
        if lock is not None:
            async with lock:  # an open in progress finishes first
                pass
        index = self._open.pop(store_id, None)
        directory = self.root / store_id

        def remove() -> None:
            if index is not None:
                index.close()
            shutil.rmtree(directory, ignore_errors=True)

        await self.run_io(remove)

    async def close(self) -> None:
        indexes, self._open = list(self._open.values()), {}

        def close_all() -> None:
            for index in indexes:
                try:
                    index.close()
                except Exception:  # closing the rest matters more than one failure
                    log.exception("closing a vector store index failed")

        await self.run_io(close_all)
        self.ingest_pool.shutdown(wait=False, cancel_futures=True)
        self.io_pool.shutdown(wait=True)
