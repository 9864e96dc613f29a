"""Which process ingests a vector store file: an owner id and a lease held in the file's row.

A file added to a store is written ``in_progress`` with no owner: it is queued. A process
that starts ingesting it claims it first — a compare-and-set on the row as it was read
(status, attempt, previous owner and lease), so of several processes exactly one wins — and
while it works it renews the lease. Every process sweeps the store for files nobody holds:
unowned ones queued a while ago (the process that queued them died before claiming) and
ones whose lease ran out or whose owner is known dead. The owner and lease are the same
idea as a run's (``spindle.engine.leases``); the fields live in the file's row, so the
metadata store — not any process — says who is working on what.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from spindle.engine import leases
from spindle.ids import now
from spindle.store.base import MISSING, Conflict, MetadataStore, Update

OWNER = "_owner"
LEASE_UNTIL = "_lease_until"


def claimable(obj: dict[str, Any], owner: str, *, trust_leases: bool, queued_grace_s: float) -> bool:
    """Whether this process may claim ``obj`` now.

    ``trust_leases=False`` (a store only this process uses): whatever another owner holds
    belongs to a process that is gone. Otherwise an unowned file is left for ``queued_grace_s``
    to the process that queued it, and an owned one until its lease runs out (or its owner is
    seen dead on this machine)."""
    if obj.get("status") != "in_progress":
        return False
    held_by = obj.get(OWNER)
    if held_by == owner:
        return False  # ours already (a second job for it was queued): the first one finishes it
    if not trust_leases:
        return True
    if held_by is None:
        return now() - int(obj.get("created_at") or 0) >= queued_grace_s
    return float(obj.get(LEASE_UNTIL) or 0) <= time.time() or leases.owner_gone(held_by)


async def claim(store: MetadataStore, obj: dict[str, Any], owner: str, lease_s: float) -> dict[str, Any] | None:
    """Take ``obj`` (as read) for ``owner``; ``None`` when someone moved it first."""
    until = time.time() + lease_s
    expect = {
        "status": "in_progress",
        "_attempt": obj.get("_attempt", MISSING),
        OWNER: obj.get(OWNER, MISSING),
        LEASE_UNTIL: obj.get(LEASE_UNTIL, MISSING),
    }
    try:
        await store.write([Update("vector_store_file", obj["id"], fields={OWNER: owner, LEASE_UNTIL: until},
                                  expect=expect)])
    except Conflict:
        return None
    return {**obj, OWNER: owner, LEASE_UNTIL: until}


async def renew(store: MetadataStore, file_key: str, owner: str, attempt: str | None, lease_s: float) -> float | None:
    """Push the lease of a file this process holds; returns the new deadline, or ``None``
    when the file is no longer ours (finished, cancelled, re-added or taken over)."""
    until = time.time() + lease_s
    expect = {"status": "in_progress", OWNER: owner, "_attempt": attempt if attempt is not None else MISSING}
    try:
        await store.write([Update("vector_store_file", file_key, fields={LEASE_UNTIL: until}, expect=expect)])
    except Conflict:
        return None
    return until


async def release(store: MetadataStore, file_key: str, owner: str, attempt: str | None) -> bool:
    """End this process's lease on a file it will not finish (shutdown): others may claim it now."""
    expect = {"status": "in_progress", OWNER: owner, "_attempt": attempt if attempt is not None else MISSING}
    try:
        await store.write([Update("vector_store_file", file_key, fields={LEASE_UNTIL: 0.0}, expect=expect)])
    except Conflict:
        return False
    return True


class ByteBudget:
    """Bytes of file text this process may hold at once. Waiters are served in order, so a
    large file is not overtaken forever by small ones; one request larger than the whole
    budget waits until everything else is released and then runs alone."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.used = 0
        self._changed = asyncio.Condition()

    def fit(self, amount: int) -> int:
        return max(0, min(amount, self.total))

    async def acquire(self, amount: int) -> int:
        """Wait until ``amount`` (capped at the budget) is free and take it; returns what was taken."""
        amount = self.fit(amount)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + amount <= self.total)
            self.used += amount
        return amount

    def charge(self, amount: int) -> None:
        """Count more bytes for a running file (its text turned out larger than estimated);
        never waits — the file is already in memory — but later files wait for it."""
        self.used += max(0, amount)

    async def release(self, amount: int) -> None:
        async with self._changed:
            self.used = max(0, self.used - amount)
            self._changed.notify_all()
