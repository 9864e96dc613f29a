"""Vector stores, their files and file batches: the behaviour behind ``/v1/vector_stores``.

Also the hooks the rest of Spindle calls (``create_for_thread``, ``add_files``,
``check_exists``, ``on_file_deleted``) and, through ``StoreSearch``, the search used by the
endpoint and the file_search tool. Objects live in the metadata store; index files under
``<data_dir>/vector_stores/<vs_id>/``.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

from spindle.errors import InvalidRequestError, NotFoundError
from spindle.ids import new_id, now
from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.embedding import get_embedder
from spindle.retrieval.index.base import SearchIndex
from spindle.retrieval.settings import RetrievalSettings
from spindle.runtime import Runtime
from spindle.store.base import (
    MISSING,
    Conflict,
    Delete,
    DeleteChildren,
    ListQuery,
    Op,
    Page,
    Put,
    Update,
    apply_update,
    diff_update,
    retry_on_conflict,
)
from spindle.vector_stores import objects as obj_
from spindle.vector_stores.indexes import IndexRegistry, StoreDropped
from spindle.vector_stores.ingestion import IngestWorker
from spindle.vector_stores.ledger import Ledger, transition
from spindle.vector_stores.requests import chunking
from spindle.vector_stores.searching import StoreSearch

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, Any] | None, ChunkingStrategy]


class VectorStoreService:
    def __init__(self, runtime: Runtime, settings: RetrievalSettings) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.settings = settings
        self.indexes = IndexRegistry(runtime.settings.data_dir / "vector_stores", settings, get_embedder(settings),
                                     runtime.settings.server.database_url.strip())
        self.ledger = Ledger(runtime.store)
        self.worker = IngestWorker(runtime, self.ledger, self.indexes, settings)
        self.search = StoreSearch(self)

    async def start(self) -> None:
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        await self.indexes.close()

    async def _index(self, store_id: str) -> SearchIndex:
        try:
            return await self.indexes.get(store_id)
        except StoreDropped:  # deleted while this request ran
            raise NotFoundError(f"No vector store found with id '{store_id}'.", param="vector_store_id") from None

    # -- stores ----------------------------------------------------------------------------
    async def get_store(self, project: str, store_id: str, param: str = "vector_store_id") -> dict[str, Any]:
        vs = await self.store.get("vector_store", store_id, project)
        if vs is None:
            raise NotFoundError(f"No vector store found with id '{store_id}'.", param=param)
        return vs

    async def create_store(self, project: str, *, name: str | None, file_ids: list[str], metadata: dict[str, Any] | None,
                           expires_after: dict[str, Any] | None, chunking_strategy: Any,
                           param: str = "file_ids") -> dict[str, Any]:
        strategy = chunking(chunking_strategy)
        entries: list[Entry] = [(fid, None, strategy) for fid in dict.fromkeys(file_ids)]
        files = await self._check_files(project, entries, param, existing=0)
        vs = obj_.new_store(new_id("vs_"), name, metadata, expires_after, now())
        ops: list[Op] = [Put("vector_store", vs, project)]
        ops += self._add_ops(project, vs, entries, batch=None, stored=False)
        await self.store.write(ops)
        self._enqueue(vs["id"], ops, files)
        return vs

    async def modify_store(self, project: str, store_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        before = await self.get_store(project, store_id)
        vs = copy.deepcopy(before)
        if "name" in changes and changes["name"] is not None:
            vs["name"] = changes["name"]
        if changes.get("metadata") is not None:
            vs["metadata"] = changes["metadata"]
        if "expires_after" in changes:
            vs["expires_after"] = changes["expires_after"]
            obj_.refresh_expiry(vs)
        # Only the changed fields: ingestion may be moving the counters at the same time.
        try:
            await self.store.write([diff_update("vector_store", before, vs)])
        except Conflict:
            raise NotFoundError(f"No vector store found with id '{store_id}'.", param="vector_store_id") from None
        return await self.get_store(project, store_id)

    async def delete_store(self, project: str, store_id: str) -> dict[str, Any]:
        await self.get_store(project, store_id)
        await self.store.write([DeleteChildren("vector_store_file", store_id),
                                DeleteChildren("vector_store_file_batch", store_id), Delete("vector_store", store_id)])
        await self.indexes.drop(store_id)
        return {"id": store_id, "object": "vector_store.deleted", "deleted": True}

    async def list_stores(self, query: ListQuery) -> Page:
        return await self.store.page(query)

    # -- files -----------------------------------------------------------------------------
    async def _check_files(self, project: str, entries: list[Entry], param: str,
                           existing: int) -> dict[str, dict[str, Any]]:
        """The files exist, are small enough, and fit in the store (400s naming ``param``);
        returns them by id."""
        new = 0
        found: dict[str, dict[str, Any]] = {}
        for i, (file_id, _, _) in enumerate(entries):
            where = f"{param}[{i}]" if param.endswith("s") else param
            file_obj = await self.store.get("file", file_id, project) if isinstance(file_id, str) else None
            if file_obj is None:
                raise InvalidRequestError(f"Invalid file id '{file_id}': no such file.", param=where,
                                          code="invalid_value")
            if int(file_obj.get("bytes") or 0) > obj_.MAX_FILE_BYTES:
                raise InvalidRequestError(
                    f"File {file_id} is {file_obj['bytes']:,} bytes; files in a vector store can be at most 512 MB.",
                    param=where, code="file_too_large")
            new += 1
            found[file_id] = file_obj
        if existing + new > obj_.MAX_FILES_PER_STORE:
            raise InvalidRequestError(
                f"A vector store can hold at most {obj_.MAX_FILES_PER_STORE:,} files; it has {existing:,} and "
                f"{new:,} more were requested.", param=param, code="too_many_files")
        return found

    def _add_ops(self, project: str, vs: dict[str, Any], entries: list[Entry], batch: dict[str, Any] | None,
                 previous: dict[str, dict[str, Any]] | None = None, stored: bool = True) -> list[Op]:
        """Ops writing new ``in_progress`` files (replacing earlier copies) and the counts.

        For a stored ``vs`` the counters move by increments and a replaced copy must still be
        as it was read; a new one (``stored=False``) is written whole by the caller."""
        ops: list[Op] = []
        created = now()
        adds: dict[str, int] = {}
        for file_id, attributes, strategy in entries:
            old = (previous or {}).get(file_id)
            steps = [transition(None, "in_progress")]
            if old is not None:
                steps.append(transition(old["status"], None))
                adds["usage_bytes"] = adds.get("usage_bytes", 0) - int(old.get("usage_bytes") or 0)
                ops.append(Update("vector_store_file", old["id"], expect={
                    "status": old["status"], "_attempt": old.get("_attempt", MISSING)}))
            for step in steps:
                for key, value in step.items():
                    adds[key] = adds.get(key, 0) + value
            item = obj_.new_file(vs["id"], file_id, strategy.to_object(), attributes,
                                 batch["id"] if batch else None, created)
            if batch is not None:
                obj_.apply_transition(batch["file_counts"], None, "in_progress")
            # A first copy is created only if no racing request created it first.
            ops.append(Put("vector_store_file", item, project, parent=vs["id"], create_only=old is None))
        if batch is not None:
            ops.append(Put("vector_store_file_batch", batch, project, parent=vs["id"]))
        adds = {k: v for k, v in adds.items() if v}
        if stored:
            ops.append(Update("vector_store", vs["id"], add=adds))
        # A new store's own Put carries the counts; for a stored one this is what is returned.
        vs.update(apply_update(vs, Update("vector_store", vs["id"], add=adds)))
        return ops

    def _enqueue(self, store_id: str, ops: list[Op], files: dict[str, dict[str, Any]]) -> None:
        """Queue the files just written; the worker gets them as written (and the file
        objects just read), so claiming one costs a write, not two reads and a write."""
        for op in ops:
            if isinstance(op, Put) and op.kind == "vector_store_file":
                self.worker.submit(store_id, op.obj["id"], known=(op.obj, files.get(op.obj["_file_id"])))

    async def add_entries(self, project: str, store_id: str, entries: list[Entry], *, param: str,
                          batch: bool) -> dict[str, Any]:
        """Attach files (one, or a batch); returns the file or the batch object."""
        entries = list({e[0]: e for e in entries}.values())  # a file listed twice is added once

        async def attempt() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, list[Op],
                                     dict[str, dict[str, Any]]]:
            vs = await self.get_store(project, store_id)
            if obj_.is_expired(vs):
                raise InvalidRequestError(f"Vector store {store_id} has expired; create a new one.",
                                          param="vector_store_id", code="vector_store_expired")
            previous = {}
            for file_id, _, _ in entries:
                old = await self.store.get("vector_store_file", obj_.stored_file_id(store_id, file_id), project)
                if old is not None:
                    previous[file_id] = old
            existing = vs["file_counts"]["total"] - len(previous)
            files = await self._check_files(project, entries, param, existing)
            batch_obj = obj_.new_batch(new_id("vsfb_"), store_id, now()) if batch else None
            ops = self._add_ops(project, vs, entries, batch_obj, previous)
            try:
                await self.store.write(ops)
            except Conflict as exc:
                if exc.kind == "vector_store":
                    raise NotFoundError(f"No vector store found with id '{store_id}'.",
                                        param="vector_store_id") from None
                raise  # a racing add or an ingestion moved one of these files: read again
            return vs, previous, batch_obj, ops, files

        _vs, previous, batch_obj, ops, files = await retry_on_conflict(attempt)
        if previous:  # re-added files are re-ingested from scratch
            index = await self._index(store_id)
            await self.indexes.run_io(lambda: [index.delete_file(fid) for fid in previous])
        self._enqueue(store_id, ops, files)
        if batch_obj is not None:
            return batch_obj
        return next(op.obj for op in ops if isinstance(op, Put) and op.kind == "vector_store_file")

    async def get_file(self, project: str, store_id: str, file_id: str) -> dict[str, Any]:
        await self.get_store(project, store_id)
        item = await self.store.get("vector_store_file", obj_.stored_file_id(store_id, file_id), project)
        if item is None:
            raise NotFoundError(f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id")
        return item

    async def update_file(self, project: str, store_id: str, file_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
        item = await self.get_file(project, store_id, file_id)
        item["attributes"] = attributes
        try:
            await self.store.write([Update("vector_store_file", item["id"], fields={"attributes": attributes})])
        except Conflict:
            raise NotFoundError(f"No file found with id '{file_id}' in vector store '{store_id}'.",
                                param="file_id") from None
        index = await self._index(store_id)
        await self.indexes.run_io(lambda: index.set_attributes(file_id, attributes))
        return item

    async def delete_file(self, project: str, store_id: str, file_id: str) -> dict[str, Any]:
        await self.get_file(project, store_id, file_id)
        await self.ledger.change(store_id, obj_.stored_file_id(store_id, file_id), status=None)
        index = await self._index(store_id)
        await self.indexes.run_io(lambda: index.delete_file(file_id))
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    async def file_content(self, project: str, store_id: str, file_id: str) -> str:
        await self.get_file(project, store_id, file_id)
        index = await self._index(store_id)
        return await self.indexes.run_io(lambda: index.file_content(file_id))

    # -- batches ---------------------------------------------------------------------------
    async def get_batch(self, project: str, store_id: str, batch_id: str) -> dict[str, Any]:
        await self.get_store(project, store_id)
        batch = await self.store.get("vector_store_file_batch", batch_id, project)
        if batch is None or batch["vector_store_id"] != store_id:
            raise NotFoundError(f"No file batch found with id '{batch_id}'.", param="batch_id")
        return batch

    async def cancel_batch(self, project: str, store_id: str, batch_id: str) -> dict[str, Any]:
        await self.get_batch(project, store_id, batch_id)
        pending = await self.store.scan("vector_store_file", {"_batch_id": batch_id, "status": "in_progress"},
                                        parent=store_id)
        for item in pending:
            await self.ledger.change(store_id, item["id"], status="cancelled", expect=("in_progress",))
        if pending:  # a batch that had already finished stays completed
            await self.store.write([Update("vector_store_file_batch", batch_id, fields={"status": "cancelled"})])
        return await self.get_batch(project, store_id, batch_id)

    # -- hooks the rest of Spindle calls ---------------------------------------------------
    async def create_for_thread(self, project: str, file_ids: list[str], metadata: dict[str, Any] | None = None,
                                *, chunking_strategy: Any = None, thread_default_expiry: bool = True) -> str:
        """A store made by the ``vector_stores`` helper or attachments; thread stores expire
        7 days after their last activity by default."""
        expiry = {"anchor": "last_active_at", "days": obj_.THREAD_STORE_DAYS} if thread_default_expiry else None
        vs = await self.create_store(project, name=None, file_ids=list(file_ids), metadata=metadata,
                                     expires_after=expiry, chunking_strategy=chunking_strategy,
                                     param="tool_resources.file_search.vector_stores[0].file_ids")
        return str(vs["id"])

    async def add_files(self, project: str, vector_store_id: str, file_ids: list[str]) -> None:
        strategy = ChunkingStrategy()
        await self.add_entries(project, vector_store_id, [(f, None, strategy) for f in file_ids],
                               param="attachments", batch=False)

    async def check_exists(self, project: str, vector_store_ids: list[str]) -> None:
        for store_id in vector_store_ids:
            if await self.store.get("vector_store", store_id, project) is None:
                raise InvalidRequestError(f"Vector store '{store_id}' not found.",
                                          param="tool_resources.file_search.vector_store_ids", code="invalid_value")

    async def on_file_deleted(self, project: str, file_id: str) -> None:
        """Remove a deleted file from every store that holds it."""
        for item in await self.store.scan("vector_store_file", {"_file_id": file_id}, project=project):
            store_id = item["vector_store_id"]
            await self.ledger.change(store_id, item["id"], status=None)
            try:
                index = await self.indexes.get(store_id)
            except StoreDropped:
                continue
            await self.indexes.run_io(functools.partial(index.delete_file, file_id))
