"""Code Interpreter in responses: the engine's tool runs in the response's container.

The tool (``spindle.tools.code_interpreter``) keys its session by thread; a response's run
asks it, through ``session_key_for``, for the container's key instead. Before the response
runs, the container's files are copied into the session (``fill``); after each call, what the
code wrote under /mnt/data becomes container files, and the call's item data (code, outputs,
the map from the Files the tool made to container files, for ``container_file_citation``) is
what ``call_item`` returns for the log's ``spindle.builtin_call.done`` event.
"""

from __future__ import annotations

import base64
import logging
import posixpath
from typing import Any

from spindle.containers.service import ContainerService
from spindle.errors import NotFoundError, SpindleError
from spindle.runtime import Runtime
from spindle.sandbox import Lease, SandboxCapacityError, SandboxUnavailable, SessionFailed
from spindle.tools.base import RunContext

log = logging.getLogger(__name__)

# An image output larger than this is shown by its File's URL path instead of inline.
_INLINE_IMAGE_BYTES = 2 * 1024 * 1024


def _service(runtime: Runtime) -> ContainerService:
    return runtime.extensions["containers"]  # type: ignore[no-any-return]


def install_hook(runtime: Runtime) -> None:
    tool = runtime.tools.get("code_interpreter")
    if tool is None or not hasattr(tool, "session_key_for") or not hasattr(tool, "on_lease"):
        return

    def key(ctx: RunContext) -> str | None:
        container_id = (ctx.run.get("_response") or {}).get("container_id")
        return ContainerService.key(ctx.project, container_id) if container_id else None

    async def prepare(ctx: RunContext, lease: Lease) -> None:
        container_id = (ctx.run.get("_response") or {}).get("container_id")
        if not container_id:
            return
        try:
            container = await _service(runtime).get(ctx.project, container_id)
        except NotFoundError:  # deleted while the response runs: no more code in it
            raise SessionFailed(f"the container {container_id} was deleted") from None
        await _service(runtime).prepare(container, lease)

    tool.session_key_for = key
    tool.on_lease = prepare


async def fill(runtime: Runtime, project: str, container_id: str) -> None:
    """Copy the container's files into its session (a new session after an expiry, too)."""
    try:
        async with _service(runtime).lease(project, container_id):
            pass
    except (SandboxUnavailable, SandboxCapacityError, SessionFailed) as exc:
        log.warning("container %s: files not copied in before the response: %s", container_id, exc)
    except SpindleError as exc:  # deleted or expired since the response was created
        log.warning("container %s cannot be used by the response: %s", container_id, exc)


async def call_item(runtime: Runtime, project: str, run: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """What a ``code_interpreter_call`` item shows, from the finished step's tool call."""
    container_id = str((run.get("_response") or {}).get("container_id") or "")
    details = final.get("code_interpreter") or {}
    outputs: list[dict[str, Any]] = []
    for out in details.get("outputs") or []:
        if out.get("type") == "logs":
            outputs.append({"type": "logs", "logs": str(out.get("logs") or "")})
        elif out.get("type") == "image":
            outputs.append({"type": "image", "url": await _image_url(runtime, project, out["image"]["file_id"])})
    files: dict[str, dict[str, str]] = {}
    service = _service(runtime)
    try:
        async with service.lease(project, container_id) as lease:
            await service.sync_out(project, container_id, lease)
            exported = dict(lease.thread.output_files)  # path under /mnt/data -> the File the tool made
        rows = {row["path"]: row for row in await service.files(project, container_id)}
        for path, file_id in exported.items():
            row = rows.get(f"/mnt/data/{path}")
            if row is not None:
                files[file_id] = {"file_id": row["id"], "filename": posixpath.basename(path)}
    except (SandboxUnavailable, SandboxCapacityError, SessionFailed, NotFoundError) as exc:
        log.warning("container %s: files written by the code not recorded: %s", container_id, exc)
    except Exception:  # a container that expired meanwhile is a 400 in the API; here just logged
        log.exception("container %s: files written by the code not recorded", container_id)
    return {"code": str(details.get("input") or ""), "outputs": outputs, "container_id": container_id,
            "files": files}


async def _image_url(runtime: Runtime, project: str, file_id: str) -> str:
    try:
        meta = await runtime.files.get(project, file_id)
        if int(meta.get("bytes") or 0) <= _INLINE_IMAGE_BYTES:
            data = await runtime.files.read(project, file_id)
            return "data:image/png;base64," + base64.b64encode(data).decode()
    except (NotFoundError, FileNotFoundError):
        pass
    return f"/v1/files/{file_id}/content"
