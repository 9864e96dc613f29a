"""Status changes of vector store files, with the store's and batch's counters kept in step.

Every change of a file's status (or its removal) is one atomic write of the file, its store
and its batch: a compare-and-set on the file and increments of the counters, held by the
store, so concurrent ingestions never lose a count. Only this module and the adding of
files in the service move counters.
"""

from __future__ import annotations

from typing import Any

from spindle.ids import now
from spindle.store.base import (
    MISSING,
    Conflict,
    Delete,
    MetadataStore,
    Op,
    Update,
    diff_update,
    retry_on_conflict,
)
from spindle.vector_stores.claims import OWNER
from spindle.vector_stores.objects import is_expired, refresh_expiry

_TOUCH_EVERY_S = 60


class Ledger:
    """Every write here is a conditional store write: a file moves only from the status it
    was read in (and only for the ingestion attempt that read it), and the counters of its
    store and batch move with it as increments, so concurrent ingestions — in this process or
    another — never lose a count. A conflict means another writer moved the file first: read
    again and decide again."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def change(
        self,
        store_id: str,
        file_key: str,
        *,
        status: str | None,
        expect: tuple[str, ...] | None = None,
        attempt: str | None = None,
        owner: str | None = None,
        last_error: dict[str, str] | None = None,
        usage_bytes: int | None = None,
        extra: dict[str, Any] | None = None,
        known: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Move a stored file to ``status`` (``None`` = delete it). Returns the file as
        written, or ``None`` when it is gone or not in one of the ``expect`` statuses — or,
        with ``owner``, when another process holds its ingestion lease (it took the file over).

        ``known``: the file as the caller last wrote it (an ingestion's claim). The first try
        then writes without reading: every field the decision depends on (status, attempt,
        owner, usage, attributes) is in the write's guard, and its batch is updated blind, so
        the write lands only if the store still holds exactly what a read would have found.
        Any conflict falls back to reading and deciding again."""
        usable = known is not None and (expect is None or known.get("status") in expect) and (
            attempt is None or known.get("_attempt") == attempt) and (owner is None or known.get(OWNER) == owner)
        first = [known if usable else None]

        async def once() -> dict[str, Any] | None:
            guess, first[0] = first[0], None
            if guess is not None:
                try:
                    return await self._write(store_id, file_key, dict(guess), status, last_error, usage_bytes,
                                             extra, owner, blind_batch=True)
                except Conflict:
                    pass  # something moved: read and decide as usual
            obj = await self.store.get("vector_store_file", file_key, None)
            if obj is None or (expect is not None and obj["status"] not in expect):
                return None
            if attempt is not None and obj.get("_attempt") != attempt:
                return None  # re-added since this ingestion started: its result is stale
            if owner is not None and obj.get(OWNER) != owner:
                return None  # taken over by another process: its ingestion writes the result
            try:
                return await self._write(store_id, file_key, obj, status, last_error, usage_bytes, extra, owner,
                                         blind_batch=False)
            except Conflict as exc:
                if exc.kind == "vector_store":
                    return None  # the store was deleted meanwhile
                raise

        return await retry_on_conflict(once)

    async def _write(self, store_id: str, file_key: str, obj: dict[str, Any], status: str | None,
                     last_error: dict[str, str] | None, usage_bytes: int | None, extra: dict[str, Any] | None,
                     owner: str | None, *, blind_batch: bool) -> dict[str, Any]:
        """One conditional write moving ``obj`` (as read, or as known) to ``status``; raises
        ``Conflict`` when the store holds something else. ``blind_batch``: update the batch's
        counters without checking first that the batch exists (a missing one is a conflict)."""
        old_status, old_usage = obj["status"], int(obj.get("usage_bytes") or 0)
        counts = transition(old_status, status)
        ops: list[Op] = []
        guard = {"status": old_status, "_attempt": obj.get("_attempt", MISSING)}
        if owner is not None:
            guard[OWNER] = owner
        if blind_batch:  # what the caller would otherwise have read and compared
            guard["usage_bytes"] = obj.get("usage_bytes", MISSING)
            guard["attributes"] = obj.get("attributes", MISSING)
            guard["_batch_id"] = obj.get("_batch_id", MISSING)
        if status is None:
            ops.append(Update("vector_store_file", file_key, expect=guard))
            ops.append(Delete("vector_store_file", file_key))
            usage_delta = -old_usage
        else:
            fields: dict[str, Any] = {"status": status, "last_error": last_error, **(extra or {})}
            usage_delta = 0
            if usage_bytes is not None:
                fields["usage_bytes"] = usage_bytes
                usage_delta = usage_bytes - old_usage
            ops.append(Update("vector_store_file", file_key, fields=fields, expect=guard))
            obj.update(fields)
        store_add = dict(counts)
        if usage_delta:
            store_add["usage_bytes"] = usage_delta
        ops.append(Update("vector_store", store_id, add=store_add))
        if obj.get("_batch_id") and (
                blind_batch or await self.store.get("vector_store_file_batch", obj["_batch_id"], None)):
            ops.append(Update("vector_store_file_batch", obj["_batch_id"], add=counts))
        await self.store.write(ops)
        return obj

    async def touch(self, project: str, store_id: str, read: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Move ``last_active_at`` to now (and ``expires_at`` with it); unexpired stores only.
        ``read``: the store as the caller just read it (saves a read; the write is a diff
        against it, so a change made since is kept).

        Within a minute of the last move nothing is written: expiry is counted in days, and a
        write per search would cost more than the search."""
        vs = dict(read) if read is not None else await self.store.get("vector_store", store_id, project)
        if vs is None or is_expired(vs) or now() - int(vs.get("last_active_at") or 0) < _TOUCH_EVERY_S:
            return vs
        before = dict(vs)
        vs["last_active_at"] = now()
        refresh_expiry(vs)
        try:
            await self.store.write([diff_update("vector_store", before, vs)])
        except Conflict:
            return None  # deleted meanwhile
        return vs


def transition(old: str | None, new: str | None) -> dict[str, int]:
    """Counter increments (``Update.add`` paths) for one file moving from ``old`` to ``new``
    (``None`` = absent)."""
    delta: dict[str, int] = {}
    for status, step in ((old, -1), (new, 1)):
        if status is not None:
            for key in (status, "total"):
                delta[f"file_counts.{key}"] = delta.get(f"file_counts.{key}", 0) + step
    return {k: v for k, v in delta.items() if v}
