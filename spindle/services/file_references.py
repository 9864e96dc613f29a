"""Deleting a file removes it from every ``code_interpreter`` configuration of its project
(assistants and threads), as the Assistants API documents; vector stores drop it through
their own deletion hook."""

from __future__ import annotations

import copy
from typing import Any

from spindle.store.base import MetadataStore, Op, diff_update, retry_on_conflict


class FileReferences:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def on_file_deleted(self, project: str, file_id: str) -> None:
        async def attempt() -> None:
            ops: list[Op] = []
            for kind in ("assistant", "thread"):
                # Only objects whose JSON mentions the id are read, so this stays cheap.
                for before in await self.store.scan(kind, project=project, mentions=file_id):
                    obj = copy.deepcopy(before)
                    if _forget(obj, file_id):
                        # Computed from what was read: a concurrent change means read again.
                        ops.append(diff_update(kind, before, obj, cas=("tool_resources", "_file_ids")))
            if ops:
                await self.store.write(ops)

        await retry_on_conflict(attempt)


def _forget(obj: dict[str, Any], file_id: str) -> bool:
    changed = False
    ci = (obj.get("tool_resources") or {}).get("code_interpreter")
    if ci and file_id in (ci.get("file_ids") or []):
        ci["file_ids"] = [f for f in ci["file_ids"] if f != file_id]
        changed = True
    if file_id in (obj.get("_file_ids") or []):
        obj["_file_ids"] = [f for f in obj["_file_ids"] if f != file_id]
        changed = True
    return changed
