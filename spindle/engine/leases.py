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
from pathlib import Path
from typing import Any

OWNER = "_owner"
LEASE_UNTIL = "_lease_until"
QUEUED_AT = "_queued_at"
FIELDS = frozenset({OWNER, LEASE_UNTIL})
# Affinity: how long a process leaves a queued Code Interpreter run to the process holding the
# thread's session before it takes the run itself (then the session starts fresh, and says so).
# Below a third of the lease, so other processes' sweepers (which wait that long) come later.
AFFINITY_WAIT_S = 2.0
AFFINITY_POLL_S = 0.1
AFFINITY_QUERIES_PER_S = 40  # the holder's look for queued runs of its threads (one query each)

def _machine() -> str:
    """This machine and PID namespace: PIDs are comparable only within one of these (two
    containers may share a host name, never a boot id and PID namespace)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return f"{socket.gethostname()}?{secrets.token_hex(4)}"  # unknown: never compared as ours
    return f"{socket.gethostname()}/{boot}/{namespace}"


_MACHINE = _machine()
_OWNER_ID = f"{_MACHINE}|{os.getpid()}|{secrets.token_hex(4)}"


def process_owner() -> str:
    """This process's id (a restarted process is a new owner)."""
    return _OWNER_ID


def owner_gone(owner: str | None) -> bool:
    """True when ``owner`` was a process on this machine (same boot, same PID namespace) that
    no longer exists: its runs need not wait for the lease to run out (a crashed server
    restarted on the same host recovers at once). Unknown or remote owners: False."""
    machine, _, rest = (owner or "").partition("|")
    pid, _, _token = rest.partition("|")
    if machine != _MACHINE or not pid.isdigit() or owner == _OWNER_ID:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, someone else's
    return False  # exists (perhaps a new process with that pid: then wait for the lease)


def claim_fields(owner: str, lease_s: float) -> dict[str, Any]:
    return {OWNER: owner, LEASE_UNTIL: time.time() + lease_s}


def lease_alive(run: dict[str, Any]) -> bool:
    return float(run.get(LEASE_UNTIL) or 0) > time.time() and not owner_gone(run.get(OWNER))


def queued_for(run: dict[str, Any]) -> float:
    """Seconds since the run was (re)queued; long ago for runs written before this field."""
    return time.time() - float(run.get(QUEUED_AT) or 0)


def affinity_wait(lease_s: float) -> float:
    return min(AFFINITY_WAIT_S, lease_s / 6)


# A run's Code Interpreter session, when it is not its thread's (a response's container).
SESSION = "_session"


def session_subject(run: dict[str, Any]) -> str:
    """What a run's Code Interpreter session belongs to: its container, else its thread."""
    return str(run.get(SESSION) or run["thread_id"])


def uses_code_interpreter(run: dict[str, Any]) -> bool:
    return any(isinstance(t, dict) and t.get("type") == "code_interpreter" for t in run.get("tools") or [])
