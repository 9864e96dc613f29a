"""Containers: a named Code Interpreter session with files, expiring after it was idle.

The store is the authority: a container is a row (``container``) and each of its files a row
(``container_file``, child of the container) whose bytes live in the blob store. The live
Python session is the sandbox manager's, keyed ``container:<project>/<id>`` (the same
provider, pool and limits as the Assistants tool), and is only a cache of that state: a
session that ended (idle, restart, another process) is re-filled from the rows on its next
lease, so files survive; variables live as long as the session does.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from spindle.errors import InvalidRequestError, NotFoundError
from spindle.ids import new_id, now
from spindle.runtime import Runtime
from spindle.sandbox import SandboxCapacityError, SandboxUnavailable, SessionFailed, SessionManager
from spindle.sandbox.manager import Lease
from spindle.store.base import Conflict, Delete, DeleteChildren, Put, Update

log = logging.getLogger(__name__)

DEFAULT_MINUTES = 20
MAX_MINUTES = 24 * 60
MAX_FILES = 1000  # files in one container (rows, blobs and copies in the session are bounded by it)
MEMORY_LIMITS = {"1g": 1024, "4g": 4096, "16g": 16384, "64g": 65536}  # MiB
DEFAULT_MEMORY = "1g"
DATA_DIR = "/mnt/data"
_MIB = 1024 * 1024
# The sandbox has no network at all: "disabled" is the only policy it can honour.
NETWORK_DISABLED = {"type": "disabled"}


def _not_found(container_id: str) -> NotFoundError:
    return NotFoundError(f"Container with id '{container_id}' not found.", param="container_id")


def is_expired(container: dict[str, Any], at: float | None = None) -> bool:
    minutes = (container.get("expires_after") or {}).get("minutes") or DEFAULT_MINUTES
    return (at if at is not None else time.time()) > int(container["last_active_at"]) + 60 * int(minutes)


def shown(container: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in container.items() if not k.startswith("_")}
    out.setdefault("network_policy", dict(NETWORK_DISABLED))  # rows written before it was shown
    if out.get("status") == "running" and is_expired(container):
        out["status"] = "expired"
    return out


def shown_file(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _unique_path(name: str, taken: set[str]) -> str:
    """``/mnt/data/<name>``, with `` (1)``, `` (2)``... before the extension when taken."""
    base = posixpath.basename(name.replace("\\", "/")).strip() or "file"
    stem, ext = posixpath.splitext(base)
    path, n = f"{DATA_DIR}/{base}", 1
    while path in taken:
        path, n = f"{DATA_DIR}/{stem} ({n}){ext}", n + 1
    return path


class ContainerService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store

    @property
    def manager(self) -> SessionManager:
        tool = self.runtime.tools.get("code_interpreter")
        manager = getattr(tool, "manager", None)
        if not isinstance(manager, SessionManager):
            problem = self.runtime.extensions.get("tool_problems", {}).get("code_interpreter")
            raise SandboxUnavailable(f"code execution is not available on this server ({problem or 'no sandbox'})")
        return manager

    @staticmethod
    def key(project: str, container_id: str) -> str:
        return f"container:{project}/{container_id}"

    # -- containers ----------------------------------------------------------------------

    async def get(self, project: str, container_id: str, param: str = "container_id") -> dict[str, Any]:
        container = await self.store.get("container", container_id, project)
        if container is None:
            raise NotFoundError(f"Container with id '{container_id}' not found.", param=param)
        return container

    async def usable(self, project: str, container_id: str, param: str = "container_id") -> dict[str, Any]:
        """The container, refused (400) once it has expired: its session and variables are gone."""
        container = await self.get(project, container_id, param)
        if is_expired(container):
            await self._drop_session(project, container_id)
            raise InvalidRequestError(f"Container '{container_id}' has expired. Create a new container.",
                                      param=param, code="container_expired")
        return container

    def check_limits(self, memory_limit: str | None, network_policy: dict[str, Any] | None,
                     param: str = "") -> None:
        """A 400 for what this server cannot give: more memory than a session may have here,
        or network access (the sandbox has none). ``param`` prefixes the names (a tool's)."""
        host_mb = self.runtime.settings.sandbox.memory_mb
        if memory_limit is not None and MEMORY_LIMITS[memory_limit] > host_mb:
            fits = [k for k, mb in MEMORY_LIMITS.items() if mb <= host_mb]
            hint = f"use {' or '.join(repr(k) for k in fits)}" if fits else "omit it"
            raise InvalidRequestError(
                f"memory_limit '{memory_limit}' is more than a code session may use on this server "
                f"({host_mb} MiB, SPINDLE_SANDBOX_MEMORY_MB); {hint}.",
                param=f"{param}memory_limit", code="invalid_value")
        if network_policy is not None and network_policy.get("type") != "disabled":
            raise InvalidRequestError(
                "network_policy 'allowlist' is not supported: code on this server runs without any "
                "network access. Use {'type': 'disabled'} or omit network_policy.",
                param=f"{param}network_policy.type", code="invalid_value")

    def memory_bytes(self, container: dict[str, Any]) -> int:
        """What the container's session may use: its memory_limit, at most the server's limit
        (only when it was left to the default "1g" can that be less than the limit shown)."""
        mb = MEMORY_LIMITS.get(str(container.get("memory_limit")), MEMORY_LIMITS[DEFAULT_MEMORY])
        return min(mb, self.runtime.settings.sandbox.memory_mb) * _MIB

    async def create(self, project: str, name: str, file_ids: list[str], minutes: int | None,
                     memory_limit: str | None, network_policy: dict[str, Any] | None = None,
                     param: str = "") -> dict[str, Any]:
        self.check_limits(memory_limit, network_policy, param)
        await self.runtime.files.require_all(project, file_ids, f"{param}file_ids")
        if len(file_ids) > MAX_FILES:
            raise InvalidRequestError(f"At most {MAX_FILES} files can be copied into a container.",
                                      param=f"{param}file_ids", code="invalid_value")
        stamp = now()
        container: dict[str, Any] = {
            "id": new_id("cntr_"), "object": "container", "created_at": stamp, "status": "running",
            "expires_after": {"anchor": "last_active_at", "minutes": minutes or DEFAULT_MINUTES},
            "last_active_at": stamp, "name": name, "memory_limit": memory_limit or DEFAULT_MEMORY,
            "network_policy": dict(NETWORK_DISABLED)}
        rows, blobs = await self._rows_from_files(project, container["id"], file_ids, set())
        for key, data in blobs:
            await self.runtime.blobs.put_bytes(key, data)
        await self.store.write([Put("container", container, project),
                                *(Put("container_file", row, project, parent=container["id"]) for row in rows)])
        return container

    async def _rows_from_files(self, project: str, container_id: str, file_ids: list[str],
                               taken: set[str]) -> tuple[list[dict[str, Any]], list[tuple[str, bytes]]]:
        rows, blobs = [], []
        for file_id in dict.fromkeys(file_ids):
            file = await self.runtime.files.get(project, file_id, param="file_ids")
            data = await self.runtime.files.read(project, file_id)
            row = self._file_row(container_id, _unique_path(str(file.get("filename") or file_id), taken),
                                 len(data), "user")
            taken.add(row["path"])
            rows.append(row)
            blobs.append((row["_blob"], data))
        return rows, blobs

    @staticmethod
    def _file_row(container_id: str, path: str, size: int, source: str) -> dict[str, Any]:
        file_id = new_id("cfile_")
        return {"id": file_id, "object": "container.file", "container_id": container_id, "created_at": now(),
                "bytes": size, "path": path, "source": source, "_blob": file_id}

    async def touch(self, project: str, container_id: str) -> None:
        """Move ``last_active_at`` (the expiry's anchor) to now."""
        try:
            await self.store.write([Update("container", container_id, fields={"last_active_at": now()})])
        except Conflict:
            raise _not_found(container_id) from None

    async def delete(self, project: str, container_id: str) -> dict[str, Any]:
        await self.get(project, container_id)
        files = await self.store.scan("container_file", parent=container_id)
        await self.store.write([DeleteChildren("container_file", container_id), Delete("container", container_id)])
        for row in files:
            await self.runtime.blobs.delete(row["_blob"])
        await self._drop_session(project, container_id)
        return {"id": container_id, "object": "container.deleted", "deleted": True}

    async def _drop_session(self, project: str, container_id: str) -> None:
        try:
            await self.manager.release(self.key(project, container_id))
        except SandboxUnavailable:
            pass  # no sandbox, no session

    # -- files ---------------------------------------------------------------------------

    async def files(self, project: str, container_id: str) -> list[dict[str, Any]]:
        await self.get(project, container_id)
        return await self.store.scan("container_file", parent=container_id)  # oldest first (write order)

    async def file(self, project: str, container_id: str, file_id: str) -> dict[str, Any]:
        row = await self.store.get("container_file", file_id, project)
        if row is None or row.get("container_id") != container_id:
            await self.get(project, container_id)
            raise NotFoundError(f"Container file with id '{file_id}' not found.", param="file_id")
        return row

    async def content(self, project: str, container_id: str, file_id: str) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
        row = await self.file(project, container_id, file_id)
        return row, self.runtime.blobs.stream(row["_blob"])

    async def add_file(self, project: str, container_id: str, *, file_id: str | None = None,
                       filename: str | None = None, data: bytes | None = None, source: str = "user",
                       path: str | None = None) -> dict[str, Any]:
        """A container file from a File (``file_id``) or from bytes; copied into the live
        session, if there is one, on its next lease."""
        await self.usable(project, container_id)
        existing = await self.files(project, container_id)
        if len(existing) >= MAX_FILES:
            raise InvalidRequestError(f"A container holds at most {MAX_FILES} files.", param="file",
                                      code="invalid_value")
        taken = {r["path"] for r in existing}
        if file_id is not None:
            await self.runtime.files.get(project, file_id, param="file_id")
            rows, blobs = await self._rows_from_files(project, container_id, [file_id], taken)
            row, (key, data) = rows[0], blobs[0]
        else:
            assert data is not None
            row = self._file_row(container_id, path or _unique_path(filename or "file", taken), len(data), source)
            key = row["_blob"]
        await self.runtime.blobs.put_bytes(key, data)
        await self.store.write([Put("container_file", row, project, parent=container_id),
                                Update("container", container_id, fields={"last_active_at": now()})])
        return row

    async def delete_file(self, project: str, container_id: str, file_id: str) -> dict[str, Any]:
        """Delete the row and its bytes, then the copy in this process's live session if it is
        idle; a session busy with a call, or one in another process, drops it on its next
        lease (``prepare``), before any more code runs there."""
        row = await self.file(project, container_id, file_id)
        await self.store.write([Delete("container_file", file_id)])
        await self.runtime.blobs.delete(row["_blob"])
        try:
            ts = self.manager.thread_session(self.key(project, container_id))
        except SandboxUnavailable:
            ts = None
        container = await self.get(project, container_id)
        if ts is not None and not ts.lock.locked() and not is_expired(container):
            try:
                async with self.manager.lease(self.key(project, container_id)) as lease:
                    await self.prepare(container, lease)
            except (SandboxUnavailable, SandboxCapacityError, SessionFailed, OSError) as exc:
                log.warning("container %s: the session's copy of %s stays until its next use: %s",
                            container_id, file_id, exc)
        return {"id": file_id, "object": "container.file.deleted", "deleted": True}

    # -- the live session ----------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, project: str, container_id: str) -> AsyncIterator[Lease]:
        """The container's session, locked, with every container file present in /mnt/data."""
        container = await self.usable(project, container_id)
        async with self.manager.lease(self.key(project, container_id)) as lease:
            await self.prepare(container, lease)
            yield lease
        await self.touch(project, container_id)

    async def prepare(self, container: dict[str, Any], lease: Lease) -> None:
        """Make a leased session match the rows: the container's memory limit, its files in
        /mnt/data, and none of the files deleted since (by any process). Called on every
        lease, also by the Code Interpreter tool's (``responses.containers.install_hook``)."""
        limit = getattr(self.manager.provider, "limit_memory", None)
        if limit is not None:
            try:
                await limit(lease.session, self.memory_bytes(container))
            except OSError as exc:  # the cgroup could not be changed: never run above the limit
                raise SessionFailed(f"the container's memory limit could not be set ({exc})") from exc
        rows = await self._rows(container["id"])
        await self._drop_deleted(lease, {row["id"] for row in rows})
        await self._sync_in(rows, lease)

    async def _rows(self, container_id: str) -> list[dict[str, Any]]:
        return await self.store.scan("container_file", parent=container_id)

    @staticmethod
    async def _drop_deleted(lease: Lease, alive: set[str]) -> None:
        """Remove from the session the copies of container files whose rows are gone."""
        session = lease.thread
        for row_id in [k for k in session.input_files if k.startswith("cfile_") and k not in alive]:
            placed, _name = session.input_files.pop(row_id)
            session.output_files.pop(placed, None)  # the tool's export map: the path is gone
            try:
                await lease.session.delete_file(placed)
            except (OSError, ValueError) as exc:  # the code can make a path unremovable; never a 500
                log.warning("container file %s: its copy %r could not be removed: %s", row_id, placed, exc)

    async def _sync_in(self, rows: list[dict[str, Any]], lease: Lease) -> None:
        session = lease.thread
        for row in rows:
            if row["id"] in session.input_files:
                continue
            if row["path"].removeprefix(DATA_DIR + "/") in session.output_files:
                # Written by the code in this session (the tool exported it): already there.
                session.input_files[row["id"]] = (row["path"].removeprefix(DATA_DIR + "/"),
                                                  posixpath.basename(row["path"]))
                continue
            data = await self.runtime.blobs.read(row["_blob"])
            placed = await lease.session.put_file(posixpath.basename(row["path"]), data)
            session.input_files[row["id"]] = (placed, posixpath.basename(row["path"]))

    async def sync_out(self, project: str, container_id: str, lease: Lease) -> list[dict[str, Any]]:
        """Files the code wrote under /mnt/data since the last sync, as new container files
        (``source: assistant``), bounded by the sandbox's output-file limits."""
        session = lease.thread
        settings = self.manager.settings
        # Paths already backed by a row: the files copied in (where they were placed) and the
        # rows themselves (the tool's own export map is not ours: it names Files).
        known = {path for path, _ in session.input_files.values()}
        known |= {row["path"].removeprefix(DATA_DIR + "/") for row in await self.files(project, container_id)}
        created: list[dict[str, Any]] = []
        for entry in await lease.session.list_files():
            if entry.path in known or len(created) >= settings.max_output_files:
                continue
            limit = settings.max_output_file_mb * 1024 * 1024
            if entry.size > limit:
                continue
            try:
                data = await lease.session.read_file(entry.path, limit)
            except ValueError:
                continue  # replaced by something that is not a regular file: never followed
            row = await self.add_file(project, container_id, data=data, source="assistant",
                                      path=f"{DATA_DIR}/{entry.path}")
            # Backed by a row from now on: deleting the row removes it from this session too.
            session.input_files[row["id"]] = (entry.path, posixpath.basename(entry.path))
            created.append(row)
        return created
