"""How the engine writes runs and the objects it shares with clients, through the store's
conditional ops (``Update``/``Put(create_only)``/``Delete(when)``), never as blind
replacements of the whole object:

- a run's status moves once: every write of a run names the status it expects to find, so a
  cancel, an expiry or a racing ``submit_tool_outputs`` that got there first wins and the
  loser's whole write is undone (``Conflict``);
- fields a client may change while the engine works (``metadata``) are never written by the
  engine, so a ``runs.update``/``messages.update`` during a run survives it;
- one active run per thread is a marker object created with ``create_only`` and removed
  when the run ends, so the store (not a lock in one process) refuses a second run.
"""

from __future__ import annotations

from typing import Any

from spindle.engine import leases
from spindle.store.base import AnyOf, Delete, Put, Update

# Set by clients (modify endpoints), never by the engine.
CLIENT_FIELDS = frozenset({"metadata"})
# Never change after creation.
_IDENTITY = frozenset({"id", "object", "created_at"})
ACTIVE_MARKER_KIND = "thread_active_run"


def engine_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``obj`` the engine owns (everything but identity, client fields and the
    lease, which only the claim and its renewals write: an execution's copy of it is stale)."""
    return {k: v for k, v in obj.items() if k not in CLIENT_FIELDS and k not in _IDENTITY and k not in leases.FIELDS}


def run_update(run: dict[str, Any], expect_status: str | AnyOf, extra: dict[str, Any] | None = None) -> Update:
    return Update("run", run["id"], fields={**engine_fields(run), **(extra or {})}, expect={"status": expect_status})


def message_update(message: dict[str, Any]) -> Update:
    return Update("message", message["id"], fields=engine_fields(message))


def marker_id(thread_id: str) -> str:
    return f"{thread_id}:active_run"


def claim_thread(run: dict[str, Any], project: str) -> Put:
    """Fails the write with ``Conflict`` when the thread has an active run already."""
    marker = {"id": marker_id(run["thread_id"]), "run_id": run["id"], "created_at": run["created_at"]}
    return Put(ACTIVE_MARKER_KIND, marker, project, parent=run["thread_id"], create_only=True)


def release_thread(run: dict[str, Any]) -> Delete:
    """Frees the thread, but only if this run holds it."""
    return Delete(ACTIVE_MARKER_KIND, marker_id(run["thread_id"]), when={"run_id": run["id"]})
