"""The three vector store objects as stored and as shown, plus their limits and expiry rules.

Stored kinds (``spindle.store``): ``vector_store`` (parent ``None``), ``vector_store_file``
(parent = store id) and ``vector_store_file_batch`` (parent = store id). Object ids are unique
across all kinds in the metadata store, and a vector store file's public id *is* the file's
id, so a vector store file is stored under ``<vs_id>:<file_id>`` and shown with ``_file_id``.

Counters (``file_counts``, ``usage_bytes``) live on the stored store and batch objects and are
updated in the same write as the file whose status changed, so they survive restarts.
"""

from __future__ import annotations

import os
import time
from typing import Any

from spindle.engine.private import strip_private

MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_FILES_PER_STORE = 10_000
MAX_FILES_PER_BATCH = 500
THREAD_STORE_DAYS = 7
DAY_S = 86_400

FILE_STATUSES = ("in_progress", "completed", "cancelled", "failed")
# The SDK's file-status values for list filters.
LIST_FILTERS = FILE_STATUSES


def empty_counts() -> dict[str, int]:
    return {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}


def new_store(store_id: str, name: str | None, metadata: dict[str, Any] | None,
              expires_after: dict[str, Any] | None, created_at: int) -> dict[str, Any]:
    store = {
        "id": store_id, "object": "vector_store", "created_at": created_at, "name": name or "",
        "usage_bytes": 0, "file_counts": empty_counts(), "status": "completed",
        "expires_after": expires_after, "expires_at": None, "last_active_at": created_at,
        "metadata": metadata or {},
    }
    refresh_expiry(store)
    return store


def stored_file_id(store_id: str, file_id: str) -> str:
    return f"{store_id}:{file_id}"


def new_file(store_id: str, file_id: str, chunking: dict[str, Any], attributes: dict[str, Any] | None,
             batch_id: str | None, created_at: int) -> dict[str, Any]:
    return {
        # _attempt tells a finishing ingestion whether the file was re-added meanwhile
        "id": stored_file_id(store_id, file_id), "_file_id": file_id, "_batch_id": batch_id,
        "_attempt": os.urandom(6).hex(),
        "object": "vector_store.file", "usage_bytes": 0, "created_at": created_at,
        "vector_store_id": store_id, "status": "in_progress", "last_error": None,
        "chunking_strategy": chunking, "attributes": attributes or {},
    }


def new_batch(batch_id: str, store_id: str, created_at: int) -> dict[str, Any]:
    return {
        "id": batch_id, "object": "vector_store.files_batch", "created_at": created_at,
        "vector_store_id": store_id, "status": "in_progress", "file_counts": empty_counts(),
    }


def refresh_expiry(store: dict[str, Any]) -> None:
    """Recompute ``expires_at`` from the policy and ``last_active_at`` (status is derived on read)."""
    policy = store.get("expires_after")
    if policy:
        store["expires_at"] = int(store.get("last_active_at") or store["created_at"]) + int(policy["days"]) * DAY_S
    else:
        store["expires_at"] = None


def is_expired(store: dict[str, Any], at: float | None = None) -> bool:
    expires_at = store.get("expires_at")
    return expires_at is not None and (at if at is not None else time.time()) >= expires_at


def store_status(store: dict[str, Any]) -> str:
    if is_expired(store):
        return "expired"
    return "in_progress" if store["file_counts"]["in_progress"] > 0 else "completed"


def apply_transition(counts: dict[str, int], old: str | None, new: str | None) -> None:
    """Move one file between the status counters (``None`` = absent)."""
    if old is not None:
        counts[old] -= 1
        counts["total"] -= 1
    if new is not None:
        counts[new] += 1
        counts["total"] += 1


def batch_status(batch: dict[str, Any]) -> str:
    if batch["status"] == "cancelled" or batch.get("_cancelled"):
        return "cancelled"
    return "in_progress" if batch["file_counts"]["in_progress"] > 0 else "completed"


def render_store(store: dict[str, Any]) -> dict[str, Any]:
    shown = strip_private(store)
    shown["status"] = store_status(store)
    return shown


def render_file(obj: dict[str, Any]) -> dict[str, Any]:
    shown = strip_private(obj)
    shown["id"] = obj["_file_id"]
    return shown


def render_batch(batch: dict[str, Any]) -> dict[str, Any]:
    shown = strip_private(batch)
    shown["status"] = batch_status(batch)
    return shown
