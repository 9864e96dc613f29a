"""Open store indexes, the thread pools that touch them, and safe removal.

Every blocking call into ``spindle.retrieval`` (opening an index, ingesting, searching,
deleting) runs on one of two bounded pools, never on the event loop: ``ingest`` (one thread
per file being ingested) and ``io`` (searches and small index edits), so a long ingestion
never delays a search. A store being deleted is closed and removed only once the ingestions
running against it have finished.

Where indexes live follows the metadata store: with ``SPINDLE_DATABASE_URL`` on PostgreSQL
they are in the database (``PgStoreIndex``: any process searches any store), otherwise in
``<data_dir>/vector_stores/<vs_id>/`` (``StoreIndex``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from spindle.retrieval.embedding import Embedder
from spindle.retrieval.index.base import SearchIndex
from spindle.retrieval.index.store import StoreIndex
from spindle.retrieval.settings import RetrievalSettings

if TYPE_CHECKING:
    from spindle.retrieval.index.pgindex import PgIndexBackend

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreDropped(Exception):
    """The store was deleted; work against its index is abandoned."""


class IndexRegistry:
    def __init__(self, root: Path, settings: RetrievalSettings, embedder: Embedder, database_url: str = "") -> None:
        self.root = root
        self.settings = settings
        self.embedder = embedder
        self.ingest_pool = ThreadPoolExecutor(settings.ingest_concurrency, thread_name_prefix="spindle-ingest")
        self.io_pool = ThreadPoolExecutor(4, thread_name_prefix="spindle-vs-io")
        self._pg: PgIndexBackend | None = None
        if database_url.startswith(("postgresql:", "postgres:")):
            from spindle.retrieval.index.pgindex import PgIndexBackend

            self._pg = PgIndexBackend(database_url, embedder.identity, embedder.dimensions)
        self._open: dict[str, SearchIndex] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._busy: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._dropped: set[str] = set()

    async def run_io(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, fn)

    @property
    def shared(self) -> bool:
        """Whether the indexes live in the database (shared by every process)."""
        return self._pg is not None

    def _open_index(self, store_id: str) -> SearchIndex:
        if self._pg is not None:
            return self._pg.open(store_id)
        directory = self.root / store_id
        return StoreIndex(directory, self.settings, self.embedder.identity, self.embedder.dimensions)

    async def get(self, store_id: str) -> SearchIndex:
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
                found = await self.run_io(lambda: self._open_index(store_id))
                self._open[store_id] = found
            return found

    async def run_ingest(self, store_id: str, fn: Callable[[SearchIndex], T]) -> T:
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
            if self._pg is not None:
                self._pg.drop(store_id)
            else:
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

            if self._pg is not None:
                self._pg.close()

        await self.run_io(close_all)
        self.ingest_pool.shutdown(wait=False, cancel_futures=True)
        self.io_pool.shutdown(wait=True)
