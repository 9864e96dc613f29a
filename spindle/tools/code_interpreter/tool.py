"""The Code Interpreter built-in tool: the model's ``python`` function, run in the thread's sandbox.

Per run: ``prepare`` leases the thread's session and copies the run's files into /mnt/data;
``instructions`` tells the model what is there; each ``call`` runs one cell, streams its
logs and figures into the step, turns figures and files the code saved into Files
(``assistants_output``), and hands the model plain, bounded text. The model's mistakes and
tripped limits are outputs it can read; only an unusable sandbox fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from spindle.engine import leases
from spindle.errors import NotFoundError
from spindle.sandbox import (
    SandboxCapacityError,
    SandboxFile,
    SandboxUnavailable,
    SessionFailed,
    SessionManager,
)
from spindle.sandbox.manager import Lease, ThreadSession
from spindle.sandbox.settings import SandboxSettings
from spindle.tools.base import BuiltinTool, RunContext, ToolCall, ToolCallSink, ToolResult, ToolUnavailable
from spindle.tools.code_interpreter import links
from spindle.tools.code_interpreter.arguments import BadArguments, parse_code, partial_code
from spindle.tools.code_interpreter.ownership import SessionOwnership
from spindle.tools.code_interpreter.quota import CallQuota, ProjectLocks
from spindle.tools.code_interpreter.recorder import CallRecorder
from spindle.tools.code_interpreter.render import cut_middle, model_output

if TYPE_CHECKING:
    from spindle.runtime import Runtime

log = logging.getLogger(__name__)

FUNCTION_NAME = "python"
_SCRATCH = "code_interpreter"
_MIB = 1024 * 1024
_RESET_NOTE = (
    "the previous Python session of this thread expired, so its variables and the files it "
    "created are gone; the uploaded files were copied again"
)

_FUNCTION_SPEC = {
    "type": "function",
    "function": {
        "name": FUNCTION_NAME,
        "description": (
            "Run Python code in a stateful Jupyter kernel and return its output. Variables, imports "
            "and files in /mnt/data persist between calls in this conversation. No internet access."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python source to run."}},
            "required": ["code"],
        },
    },
}


def _file_ids(ctx: RunContext) -> list[str]:
    """The run's files for code_interpreter, in order, without duplicates."""
    ids: list[str] = []
    for owner in (ctx.assistant, ctx.thread):
        resources = (owner.get("tool_resources") or {}).get("code_interpreter") or {}
        ids += resources.get("file_ids") or []
    ids += ctx.assistant.get("file_ids") or []  # v1 assistants
    ids += ctx.attachment_file_ids.get("code_interpreter", [])
    return list(dict.fromkeys(str(i) for i in ids))


class CodeInterpreterTool(BuiltinTool):
    type: ClassVar[str] = "code_interpreter"

    def __init__(self, runtime: Runtime, manager: SessionManager, settings: SandboxSettings,
                 ownership: SessionOwnership | None = None) -> None:
        self.runtime = runtime
        self.manager = manager
        self.settings = settings
        self.ownership = ownership
        self._project_locks = ProjectLocks()
        # key -> the local session recorded as this process's in the store (see ownership.py)
        self._recorded: dict[str, ThreadSession] = {}
        self._renewer: asyncio.Task[None] | None = None
        # Hook (the Responses API's containers): the session key a run uses instead of its
        # thread's, or None for the thread's own session.
        self.session_key_for: Callable[[RunContext], str | None] | None = None
        # Hook (the same): called with every lease of such a session, before code runs, to
        # make it match the container (its memory limit, its files).
        self.on_lease: Callable[[RunContext, Lease], Awaitable[None]] | None = None

    @staticmethod
    def _key(project: str, thread_id: str) -> str:
        return f"{project}/{thread_id}"

    def _session_key(self, ctx: RunContext) -> str:
        hooked = self.session_key_for(ctx) if self.session_key_for is not None else None
        return hooked or self._key(ctx.project, ctx.thread_id)

    # -- what the model sees ------------------------------------------------------------

    def functions(self, ctx: RunContext) -> list[dict[str, Any]]:
        return [_FUNCTION_SPEC]

    def instructions(self, ctx: RunContext) -> str | None:
        state = ctx.scratch.get(_SCRATCH, {})
        lines = [
            "You can run Python with the `python` tool in a stateful Jupyter environment (numpy, pandas, "
            "matplotlib, scipy, scikit-learn and more are installed; there is no internet access). "
            f"A call may run for at most {self.settings.call_timeout_s:g} seconds. Figures you show with "
            "matplotlib are displayed to the user. To give the user a file, save it under /mnt/data and "
            "link it in your answer as sandbox:/mnt/data/<name>."
        ]
        files: list[tuple[str, str]] = state.get("files", [])
        if files:
            listing = "\n".join(f"- /mnt/data/{path} (uploaded as {name!r})" for path, name in files)
            # Thousands of attachments must not flood the model's context either.
            lines.append(
                "Files available in /mnt/data:\n" + cut_middle(listing, self.settings.max_output_chars)
            )
        for note in state.get("copy_notes", {}).values():
            lines.append(f"Note: {note}.")
        if state.get("reset"):
            lines.append(f"Note: {_RESET_NOTE}.")
        return "\n".join(lines)

    def initial_step_tool_call(self, function_name: str) -> dict[str, Any]:
        return {"type": "code_interpreter", "code_interpreter": {"input": "", "outputs": []}}

    def input_delta(
        self, function_name: str, arguments_so_far: str, already_sent: int
    ) -> tuple[dict[str, Any] | None, int]:
        code = partial_code(arguments_so_far)
        if code is None or len(code) <= already_sent:
            return None, already_sent
        return {"type": "code_interpreter", "code_interpreter": {"input": code[already_sent:]}}, len(code)

    # -- runs ---------------------------------------------------------------------------

    async def prepare(self, ctx: RunContext) -> None:
        try:
            async with self._lease(ctx) as lease:
                await self._sync_inputs(ctx, lease)
        except SandboxUnavailable as exc:
            raise ToolUnavailable(str(exc)) from exc
        except (SandboxCapacityError, SessionFailed):
            return  # transient: the first call retries and, if it fails again, tells the model

    @contextlib.asynccontextmanager
    async def _lease(self, ctx: RunContext) -> AsyncIterator[Lease]:
        """The thread's session here, recorded in the store as this process's.

        A local session the store says another process has taken over since is stale (the
        thread's state moved on there): it is ended first, so this call starts fresh and says
        so. A session started here for a thread whose session elsewhere had run code is a
        reset too (that process died, or drained)."""
        key = self._session_key(ctx)
        state = ctx.scratch.setdefault(
            _SCRATCH, {"files": [], "reset": False, "unreadable": set(), "copy_notes": {}, "new_notes": []}
        )
        # Ownership rows are per session: the thread's, or the response's container's.
        own = self.ownership
        subject = _subject(ctx)
        if own is not None and key in self._recorded and not await own.still_ours(ctx.project, subject):
            self._recorded.pop(key, None)
            await self.manager.discard(key)
        async with self.manager.lease(key) as lease:
            if self.on_lease is not None:
                await self.on_lease(ctx, lease)
            lost = False
            if own is not None and self._recorded.get(key) is not lease.thread:
                lost = await own.take(ctx.project, subject, key=key)
                self._recorded[key] = lease.thread
            if lease.reset or lost:
                state["reset"] = True  # the instructions say it ...
                state["reset_untold"] = True  # ... and so does the next call's output
            yield lease

    async def _sync_inputs(self, ctx: RunContext, lease: Lease) -> None:
        """Copy the run's files not yet in this session; record the listing for instructions."""
        state = ctx.scratch.setdefault(
            _SCRATCH, {"files": [], "reset": False, "unreadable": set(), "copy_notes": {}, "new_notes": []}
        )
        copied = lease.thread.input_files
        disk = self.settings.disk_mb * _MIB
        for file_id in _file_ids(ctx):
            if file_id in copied or file_id in state["unreadable"] or file_id in state["copy_notes"]:
                continue
            name = file_id
            try:
                meta = await self.runtime.files.get(ctx.project, file_id)
                name = str(meta.get("filename") or file_id)
                if int(meta.get("bytes") or 0) > disk:
                    raise OSError(f"it is larger than the sandbox's {self.settings.disk_mb} MiB disk")
                data = await self.runtime.files.read(ctx.project, file_id)
                copied[file_id] = (await lease.session.put_file(name, data), name)
            except (NotFoundError, FileNotFoundError) as exc:  # deleted since: skip it, the run goes on
                log.warning("code_interpreter: file %s not copied: %s", file_id, exc)
                state["unreadable"].add(file_id)
            except OSError as exc:
                # /mnt/data full (ENOSPC), or the file cannot fit at all: this run goes on
                # without it, and the next run tries again, so the thread is never stuck.
                why = exc.strerror if exc.strerror else str(exc)
                note = (
                    f"the file {name[:200]!r} could not be copied into /mnt/data ({why}); the sandbox's "
                    f"disk of {self.settings.disk_mb} MiB is shared by /mnt/data and /tmp: delete files "
                    "there to make room, it is copied again on the next run"
                )
                state["copy_notes"][file_id] = note
                state["new_notes"].append(note)
        state["files"] = list(copied.values())

    async def call(self, ctx: RunContext, call: ToolCall, sink: ToolCallSink) -> ToolResult:
        try:
            code = parse_code(call.arguments)
        except BadArguments as exc:
            return self._result(call.arguments, [], str(exc))
        key = self._session_key(ctx)
        try:
            async with self._lease(ctx) as lease:
                return await self._run(ctx, call, sink, lease, code)
        except SandboxUnavailable as exc:
            raise ToolUnavailable(str(exc)) from exc
        except SandboxCapacityError as exc:
            return self._result(code, [], f"[error: {exc}]")
        except SessionFailed as exc:
            await self.manager.discard(key)
            return self._result(
                code, [], f"[error: the Python session failed ({exc}); the next call will start a new one]"
            )

    async def _run(
        self, ctx: RunContext, call: ToolCall, sink: ToolCallSink, lease: Lease, code: str
    ) -> ToolResult:
        await self._sync_inputs(ctx, lease)
        before = {f.path: f for f in await lease.session.list_files()}
        quota = CallQuota(
            self.runtime.files,
            ctx.project,
            call_bytes=self.settings.max_output_call_mb * _MIB,
            project_bytes=self.settings.max_output_project_mb * _MIB,
            locks=self._project_locks,
        )
        recorder = CallRecorder(
            ctx, call.id, sink, self.settings.max_output_chars, self.settings.max_output_files, quota
        )
        result = await lease.execute(code, timeout=self.settings.call_timeout_s, on_output=recorder.on_output)
        if self.ownership is not None and lease.thread.executions == 1:
            await self.ownership.executed(ctx.project, _subject(ctx))
        if result.note:  # a tripped limit or a restart: shown in the step's logs too
            await recorder.add_text(f"\n[{result.note}]\n")
        changed = [f for f in await lease.session.list_files() if before.get(f.path) != f]
        written, skipped = await self._export(lease, changed, quota)
        state = ctx.scratch.get(_SCRATCH, {})
        notes = [_RESET_NOTE] if state.pop("reset_untold", False) else []
        notes += state.get("new_notes", [])
        state["new_notes"] = []
        if recorder.images_dropped:
            notes.append(f"{recorder.images_dropped} more images were not saved (limit per call)")
        notes += quota.notes()
        output = model_output(
            recorder.logs,
            images=len(recorder.image_file_ids),
            written=written,
            skipped=skipped,
            notes=notes,
            max_chars=self.settings.max_output_chars,
        )
        images = [{"type": "image_file", "image_file": {"file_id": fid}} for fid in recorder.image_file_ids]
        return ToolResult(
            output=output,
            step_tool_call={
                "type": "code_interpreter",
                "code_interpreter": {"input": code, "outputs": recorder.step_outputs()},
            },
            message_content=images,
        )

    async def _export(
        self, lease: Lease, changed: list[SandboxFile], quota: CallQuota
    ) -> tuple[list[str], list[str]]:
        """Turn files the call wrote into Files; returns (exported paths, skipped paths)."""
        outputs = lease.thread.output_files
        limit = self.settings.max_output_file_mb * _MIB
        written: list[str] = []
        skipped: list[str] = []
        for f in changed:
            if len(written) >= self.settings.max_output_files or f.size > limit:
                skipped.append(f.path)
                continue
            if not quota.fits_call(f.size):  # known before reading: the bytes are never loaded
                continue
            try:
                data = await lease.session.read_file(f.path, limit)
            except (OSError, ValueError):  # vanished, replaced by a link, grew: not exported
                skipped.append(f.path)
                continue
            created = await quota.create(f"/mnt/data/{f.path}", data)
            if created is None:
                continue
            outputs[f.path] = str(created["id"])
            written.append(f.path)
        return written, skipped

    def _result(self, code: str, outputs: list[dict[str, Any]], message: str) -> ToolResult:
        logs = [{"type": "logs", "logs": message}] + outputs
        return ToolResult(
            output=message,
            step_tool_call={"type": "code_interpreter", "code_interpreter": {"input": code, "outputs": logs}},
        )

    # -- text ---------------------------------------------------------------------------

    def annotate(self, ctx: RunContext, text: str) -> list[dict[str, Any]]:
        ts = self.manager.thread_session(self._session_key(ctx))
        return links.annotate(text, ts.output_files if ts is not None else {})

    def pending_marker(self, text: str) -> int | None:
        return links.pending_marker(text)

    # -- lifecycle ----------------------------------------------------------------------

    async def on_thread_deleted(self, project: str, thread_id: str) -> None:
        key = self._key(project, thread_id)
        self._recorded.pop(key, None)
        await self.manager.release(key)
        if self.ownership is not None:
            await self.ownership.forget(project, thread_id)

    async def start(self) -> None:
        await self.manager.start()
        if self.ownership is not None:
            self._renewer = asyncio.create_task(self._renew_forever(self.ownership))

    async def shutdown(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self.ownership is not None:
            try:
                await self.ownership.let_go_all()  # our sessions end with us: no affinity to wait for
            except Exception:
                log.exception("code_interpreter: could not release session leases")
        await self.manager.shutdown()

    async def _renew_forever(self, own: SessionOwnership) -> None:
        while True:
            await asyncio.sleep(own.lease_s / 3)
            try:
                await self.renew_once(own)
            except Exception:
                log.exception("code_interpreter: renewing session leases failed")

    async def renew_once(self, own: SessionOwnership) -> None:
        """Renew the leases of sessions alive here; drop what ended here or moved elsewhere."""
        for key, ts in list(self._recorded.items()):
            if self.manager.thread_session(key) is not ts:  # expired or broken here
                self._recorded.pop(key, None)
                await own.let_go(key)
        for key in await own.renew():
            stale = self._recorded.pop(key, None)
            if stale is not None and self.manager.thread_session(key) is stale and not stale.lock.locked():
                await self.manager.discard(key)  # taken over elsewhere: this copy is stale


def _subject(ctx: RunContext) -> str:
    """What the run's session belongs to (its ownership row): a response's container, else the thread."""
    return str(ctx.run.get(leases.SESSION) or ctx.thread_id)
