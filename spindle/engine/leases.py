"""Which process executes a run, held in the run's row: an owner id and a lease.

A process that starts executing a run claims it (queued → in_progress, compare-and-set) and
writes its owner id and a lease deadline; while it executes, it renews the lease. Any
process's sweeper treats a run whose lease ran out as orphaned — its process died — and
settles it the way a restart does: a mid-turn run fails with a clear ``last_error``, a
cancelling one becomes cancelled, a queued one is claimed by whoever gets there first. The
compare-and-set on the status makes every such move happen once, whichever process makes it.

With a store only one process uses (SQLite), a run found active at start belongs to a process
that is gone, so start-up recovery does not wait for leases to run out.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any

OWNER = "_owner"
LEASE_UNTIL = "_lease_until"
QUEUED_AT = "_queued_at"
FIELDS = frozenset({OWNER, LEASE_UNTIL})

_OWNER_ID = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def process_owner() -> str:
    """This process's id (a restarted process is a new owner)."""
    return _OWNER_ID


def claim_fields(owner: str, lease_s: float) -> dict[str, Any]:
    return {OWNER: owner, LEASE_UNTIL: time.time() + lease_s}


def lease_alive(run: dict[str, Any]) -> bool:
    return float(run.get(LEASE_UNTIL) or 0) > time.time()


def queued_for(run: dict[str, Any]) -> float:
    """Seconds since the run was (re)queued; long ago for runs written before this field."""
    return time.time() - float(run.get(QUEUED_AT) or 0)
