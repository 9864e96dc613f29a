"""Drive one ipykernel with jupyter_client: wait until ready, execute a cell, interrupt.

Transport-agnostic (the local provider uses IPC sockets in a bind-mounted directory, since a
kernel in its own network namespace cannot be reached over TCP; a remote provider could use
TCP through a tunnel). This module knows the Jupyter messaging protocol and nothing about
isolation: the caller says whether the kernel process is still alive, and decides what to do
when a timed-out kernel does not stop (kill and restart).
"""

from __future__ import annotations

import base64
import queue
import time
from collections.abc import Callable
from typing import Any

import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient

from spindle.sandbox.provider import (
    ErrorOutput,
    ExecutionResult,
    ImageOutput,
    Output,
    OutputCallback,
    TextOutput,
)

_IMAGE_MIMES = ("image/png", "image/jpeg")
# Poll granularity while waiting for output: bounds how late we notice a dead kernel or a
# timeout, not the latency of output (messages wake the poll immediately).
_POLL_S = 0.25
_MAX_KEPT_TEXT = 1_000_000  # characters of text kept in an ExecutionResult


class KernelNotReady(Exception):
    """The kernel did not answer ``kernel_info`` in time, or died while starting."""


class KernelChannel:
    """A client connected to one kernel. Not safe for concurrent ``execute`` calls."""

    def __init__(self, connection: dict[str, Any], context: zmq.asyncio.Context) -> None:
        self._client = AsyncKernelClient(context=context)
        self._client.load_connection_info(connection)  # type: ignore[arg-type]
        # No heartbeat channel: liveness comes from the process itself, and hb starts a thread.
        self._client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
        self._unfinished: str | None = None

    def close(self) -> None:
        self._client.stop_channels()

    async def wait_ready(self, timeout: float, alive: Callable[[], bool]) -> None:
        """Return once the kernel answers on shell *and* iopub is subscribed.

        A SUB socket drops what is published before its subscription lands, so a kernel_info
        reply alone does not prove that outputs will reach us; its busy/idle status does."""
        deadline = time.monotonic() + timeout
        while True:
            msg_id = self._client.kernel_info()
            got_reply = False
            step_deadline = min(deadline, time.monotonic() + 0.5)
            while time.monotonic() < step_deadline:
                wait = max(0.01, step_deadline - time.monotonic())
                try:
                    if not got_reply:
                        reply = await self._client.get_shell_msg(timeout=wait)
                        got_reply = reply.get("parent_header", {}).get("msg_id") == msg_id
                    else:
                        msg = await self._client.get_iopub_msg(timeout=wait)
                        if msg.get("parent_header", {}).get("msg_id") == msg_id:
                            await self._drain_iopub()
                            return
                except queue.Empty:
                    pass
            if not alive():
                raise KernelNotReady("the kernel process exited while starting")
            if time.monotonic() >= deadline:
                raise KernelNotReady(f"the kernel did not answer within {timeout:.0f} s")

    async def _drain_iopub(self) -> None:
        while True:
            try:
                await self._client.get_iopub_msg(timeout=0)
            except queue.Empty:
                return

    async def run_silent(self, code: str, timeout: float) -> dict[str, Any]:
        """Run setup code without history or broadcast outputs; return the reply content."""
        msg_id = self._client.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = await self._client.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                await self._drain_iopub()
                return dict(reply["content"])
        raise KernelNotReady(f"setup code did not finish within {timeout:.0f} s")

    async def interrupt(self) -> None:
        """Ask the kernel to interrupt itself (``interrupt_mode: message``): ipykernel's
        control thread answers even while the shell thread runs user code."""
        msg = self._client.session.msg("interrupt_request", {})
        self._client.control_channel.send(msg)

    async def execute(
        self,
        code: str,
        *,
        timeout: float,
        grace: float,
        alive: Callable[[], bool],
        on_output: OutputCallback | None = None,
    ) -> tuple[ExecutionResult, bool]:
        """Run ``code``; return the result and whether the kernel must be killed and restarted.

        Past ``timeout`` the kernel is interrupted; past ``timeout + grace`` it is given up."""
        await self._drain_iopub()
        await self._drain_shell()
        msg_id = self._client.execute(
            code, silent=False, store_history=True, allow_stdin=False, stop_on_error=True
        )
        try:
            result, must_restart = await self._collect(msg_id, timeout, grace, alive, on_output)
        except BaseException:
            # The caller gave up (run cancelled, on_output failed): stop the code rather than
            # leave the kernel busy, and make the next call wait until it has really stopped
            # (a request queued behind an interrupted one would be aborted unrun).
            self._unfinished = msg_id
            await self.interrupt()
            raise
        if not must_restart and await self._wait_reply(msg_id) == "aborted":
            result.status = "error"
            result.note = "the kernel did not run this code (aborted after an earlier error)"
        return result, must_restart

    async def settle(self, timeout: float) -> bool:
        """Wait until a request we stopped waiting for (a cancelled call) has finished.

        False when it is still running after ``timeout``: the kernel must be restarted."""
        msg_id, self._unfinished = self._unfinished, None
        if msg_id is None:
            return True
        status = await self._wait_reply(msg_id, timeout)
        await self._drain_iopub()
        return status is not None

    async def _collect(
        self,
        msg_id: str,
        timeout: float,
        grace: float,
        alive: Callable[[], bool],
        on_output: OutputCallback | None,
    ) -> tuple[ExecutionResult, bool]:
        outputs: list[Output] = []
        kept_text = 0
        deadline = time.monotonic() + timeout
        interrupted_at: float | None = None
        while True:
            now = time.monotonic()
            if interrupted_at is None and now > deadline:
                await self.interrupt()
                interrupted_at = now
            elif interrupted_at is not None and now > interrupted_at + grace:
                note = f"the call exceeded the {timeout:g} s time limit and did not stop when interrupted"
                return ExecutionResult("restarted", outputs, note), True
            try:
                msg = await self._client.get_iopub_msg(timeout=_POLL_S)
            except queue.Empty:
                if not alive():
                    return ExecutionResult("restarted", outputs, "the Python process died"), True
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            msg_type = msg["msg_type"]
            content = msg["content"]
            if msg_type == "status":
                if content.get("execution_state") == "idle":
                    break
                continue
            for out in _to_outputs(msg_type, content):
                if on_output is not None:
                    await on_output(out)
                # The caller streams everything through on_output; what we keep is bounded so
                # a print loop cannot grow the server's memory without limit.
                if isinstance(out, TextOutput):
                    kept_text += len(out.text)
                    if kept_text > _MAX_KEPT_TEXT:
                        if kept_text - len(out.text) <= _MAX_KEPT_TEXT:
                            outputs.append(TextOutput("stderr", "[... further output not kept ...]\n"))
                        continue
                outputs.append(out)
        if interrupted_at is not None:
            note = f"the call exceeded the {timeout:g} s time limit and was interrupted (variables are kept)"
            return ExecutionResult("timeout", outputs, note), False
        failed = any(isinstance(o, ErrorOutput) for o in outputs)
        return ExecutionResult("error" if failed else "ok", outputs), False

    async def _wait_reply(self, msg_id: str, timeout: float = 2.0) -> str | None:
        """The status of the shell reply to ``msg_id`` (``ok``, ``error``, ``aborted``), or None.

        After the idle status the reply is normally already queued: it is sent first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = await self._client.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return str(reply.get("content", {}).get("status"))
        return None

    async def _drain_shell(self) -> None:
        while True:
            try:
                await self._client.get_shell_msg(timeout=0)
            except queue.Empty:
                return


def _to_outputs(msg_type: str, content: dict[str, Any]) -> list[Output]:
    if msg_type == "stream":
        if content.get("name") == "stderr":
            return [TextOutput("stderr", str(content.get("text", "")))]
        return [TextOutput("stdout", str(content.get("text", "")))]
    if msg_type == "error":
        return [
            ErrorOutput(
                str(content.get("ename", "")),
                str(content.get("evalue", "")),
                list(content.get("traceback", [])),
            )
        ]
    if msg_type in ("execute_result", "display_data", "update_display_data"):
        data = content.get("data") or {}
        for mime in _IMAGE_MIMES:
            if mime in data:
                raw = data[mime]
                return [ImageOutput(mime, base64.b64decode(raw) if isinstance(raw, str) else bytes(raw))]
        text = data.get("text/plain")
        if text is None:
            return []
        return [TextOutput("result" if msg_type == "execute_result" else "display", str(text))]
    return []
