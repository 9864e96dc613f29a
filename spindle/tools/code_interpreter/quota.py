"""Byte quotas on the Files a call makes (figures and /mnt/data files): per call and per project.

Without them one call could turn gigabytes of generated files into stored Files in seconds.
The per-project total counts every ``assistants_output`` File of the project, so Files kept
after their thread is deleted still count until the user deletes them (the OpenAI behaviour:
output Files outlive threads). The check and the create happen under one lock per project, so
concurrent calls of one project can never together pass the limit.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

_MIB = 1024 * 1024


class ProjectLocks:
    """One lock per project, alive while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def get(self, project: str) -> asyncio.Lock:
        lock = self._locks.get(project)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[project] = lock
        return lock


class CallQuota:
    """What one call may still create; ``create`` makes a File only within both limits."""

    def __init__(
        self, files: Any, project: str, *, call_bytes: int, project_bytes: int, locks: ProjectLocks
    ) -> None:
        self._files = files
        self._project = project
        self._remaining = call_bytes
        self._call_limit = call_bytes
        self._project_limit = project_bytes
        self._locks = locks
        self.refused_call = 0
        self.refused_project = 0

    def fits_call(self, size: int) -> bool:
        """Cheap pre-check before reading a file's bytes (counts a refusal)."""
        if size > self._remaining:
            self.refused_call += 1
            return False
        return True

    async def _project_used(self) -> int:
        store = getattr(self._files, "store", None)
        if store is None:
            return 0
        found = await store.scan("file", {"purpose": "assistants_output"}, project=self._project)
        return sum(int(obj.get("bytes") or 0) for obj in found)

    async def create(self, filename: str, data: bytes) -> dict[str, Any] | None:
        """The File made from ``data``, or None when a limit refused it (and counted why)."""
        if not self.fits_call(len(data)):
            return None
        async with self._locks.get(self._project):
            if await self._project_used() + len(data) > self._project_limit:
                self.refused_project += 1
                return None
            created: dict[str, Any] = await self._files.create(
                self._project, filename=filename, data=data, purpose="assistants_output"
            )
        self._remaining -= len(data)
        return created

    def notes(self) -> list[str]:
        notes: list[str] = []
        if self.refused_call:
            notes.append(
                f"{self.refused_call} output file(s) or image(s) were not saved: this call reached its "
                f"limit of {self._call_limit / _MIB:g} MiB of output files"
            )
        if self.refused_project:
            notes.append(
                f"{self.refused_project} output file(s) or image(s) were not saved: the project's output "
                f"files reached their limit of {self._project_limit / _MIB:g} MiB (delete Files to make room)"
            )
        return notes
