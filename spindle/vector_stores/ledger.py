"""Status changes of vector store files, with the store's and batch's counters kept in step.

Every change of a file's status (or its removal) is one atomic write of the file, its store
and its batch, made under a per-store lock so concurrent ingestions never lose a count.
This is the only place that writes counters.
"""

from __future__ import annotations

import asyncio
from typing import Any

from spindle.ids import now
from spindle.store.base import Delete, MetadataStore, Op, Put
from spindle.vector_stores.objects import apply_transition, is_expired, refresh_expiry

_TOUCH_EVERY_S = 60


class Ledger:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, store_id: str) -> asyncio.Lock:
        return self._locks.setdefault(store_id, asyncio.Lock())

    def forget(self, store_id: str) -> None:
        self._locks.pop(store_id, None)

    async def change(
        self,
        store_id: str,
        file_key: str,
        *,
        status: str | None,
        expect: tuple[str, ...] | None = None,
        attempt: str | None = None,
        last_error: dict[str, str] | None = None,
        usage_bytes: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Move a stored file to ``status`` (``None`` = delete it). Returns the file as
        written, or ``None`` when it is gone or not in one of the ``expect`` statuses."""
        async with self.lock(store_id):
            obj = await self.store.get("vector_store_file", file_key, None)
            vs = await self.store.get("vector_store", store_id, None)
            if obj is None or vs is None or (expect is not None and obj["status"] not in expect):
                return None
            if attempt is not None and obj.get("_attempt") != attempt:
                return None  # re-added since this ingestion started: its result is stale
            project_parent = await self.store.locate("vector_store", store_id)
            project = project_parent[0] if project_parent else "default"
            ops: list[Op] = []
            old_status, old_usage = obj["status"], int(obj.get("usage_bytes") or 0)
            apply_transition(vs["file_counts"], old_status, status)
            batch = await self.store.get("vector_store_file_batch", obj["_batch_id"], None) if obj.get("_batch_id") else None
            if batch is not None:
                apply_transition(batch["file_counts"], old_status, status)
                ops.append(Put("vector_store_file_batch", batch, project, parent=store_id))
            if status is None:
                vs["usage_bytes"] = max(0, int(vs["usage_bytes"]) - old_usage)
                ops.append(Delete("vector_store_file", file_key))
            else:
                obj["status"] = status
                obj["last_error"] = last_error
                if usage_bytes is not None:
                    obj["usage_bytes"] = usage_bytes
                    vs["usage_bytes"] = max(0, int(vs["usage_bytes"]) - old_usage + usage_bytes)
                if extra:
                    obj.update(extra)
                ops.append(Put("vector_store_file", obj, project, parent=store_id))
            ops.append(Put("vector_store", vs, project))
            await self.store.write(ops)
            return obj

    async def touch(self, project: str, store_id: str) -> dict[str, Any] | None:
        """Move ``last_active_at`` to now (and ``expires_at`` with it); unexpired stores only.

        Within a minute of the last move nothing is written: expiry is counted in days, and a
        write per search would cost more than the search."""
        vs = await self.store.get("vector_store", store_id, project)
        if vs is None or is_expired(vs) or now() - int(vs.get("last_active_at") or 0) < _TOUCH_EVERY_S:
            return vs
        async with self.lock(store_id):
            vs = await self.store.get("vector_store", store_id, project)
            if vs is None:
                return None
            if is_expired(vs):
                return vs
            vs["last_active_at"] = now()
            refresh_expiry(vs)
            await self.store.write([Put("vector_store", vs, project)])
            return vs
