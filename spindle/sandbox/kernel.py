"""Drive one ipykernel with jupyter_client: wait until ready, execute a cell, interrupt.

Transport-agnostic (the local provider uses IPC sockets in a bind-mounted directory, since a
kernel in its own network namespace cannot be reached over TCP; a remote provider could use
TCP through a tunnel). This module knows the Jupyter messaging protocol and nothing about
isolation: the caller says whether the kernel process is still alive, and decides what to do
when a timed-out kernel does not stop (kill and restart).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import queue
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from zmq.utils.monitor import parse_monitor_message

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
# Messages queued per socket on the server's side. With the message size limit this bounds
# what a kernel can make the server hold (a full queue makes the kernel's side wait or drop).
RCVHWM = 2
_MAX_TRACEBACK_LINES = 2000
_MIB = 1024 * 1024


def message_limit(max_image_bytes: int) -> int:
    """Largest message accepted from a kernel: room for one base64 image of the file limit."""
    return max(8 * _MIB, max_image_bytes * 4 // 3 + _MIB)


def configure_context(context: zmq.Context[Any], max_image_bytes: int) -> None:
    """Bound every socket the server opens to a kernel; call before any socket is made.

    libzmq copies socket options into a connection when it is made, so they are set as the
    context's defaults: an oversized message makes libzmq drop the connection (it reconnects)
    without ever allocating it, and each socket queues at most ``RCVHWM`` messages."""
    context.setsockopt(zmq.MAXMSGSIZE, message_limit(max_image_bytes))
    context.setsockopt(zmq.RCVHWM, RCVHWM)


_READY_STEP_S = 0.1


class KernelNotReady(Exception):
    """The kernel did not answer ``kernel_info`` in time, or died while starting."""


class KernelChannel:
    """A client connected to one kernel. Not safe for concurrent ``execute`` calls."""

    def __init__(
        self, connection: dict[str, Any], context: zmq.asyncio.Context, *, max_image_bytes: int = 64 * _MIB
    ) -> None:
        self._client = AsyncKernelClient(context=context)
        self._client.load_connection_info(connection)  # type: ignore[arg-type]
        # No heartbeat channel: liveness comes from the process itself, and hb starts a thread.
        self._client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
        self._unfinished: str | None = None
        self._max_image_bytes = max_image_bytes
        self._limit_mb = message_limit(max_image_bytes) / _MIB
        # libzmq drops an oversized message by closing the connection for good: a monitor on
        # the sockets we read tells us, so the model is told and the channel is reopened.
        self._monitored = [
            self._client.iopub_channel.socket,
            self._client.shell_channel.socket,
            self._client.control_channel.socket,  # interrupt replies: unread, but a reset kills interrupts
        ]
        self._monitors = [sock.get_monitor_socket(zmq.EVENT_DISCONNECTED) for sock in self._monitored]
        self._resets = 0
        self._drainer: asyncio.Task[None] | None = None
        self._early_reply: tuple[str, str] | None = None  # (msg_id, status) read by _collect

    def close(self) -> None:
        self._stop_draining_now()
        for sock in self._monitored:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
        for mon in self._monitors:
            mon.close(linger=0)
        self._client.stop_channels()

    @property
    def broken(self) -> bool:
        """Whether a connection we read was reset. libzmq does not reconnect after a protocol
        error (an oversized message is one), so the owner must open a new channel."""
        return self._poll_resets() > 0

    def _poll_resets(self) -> int:
        """Read the monitors; how many resets were seen on this channel."""
        for mon in self._monitors:
            while True:
                try:
                    frames = zmq.Socket.shadow(mon.underlying).recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                with contextlib.suppress(Exception):
                    if parse_monitor_message(frames)["event"] == zmq.EVENT_DISCONNECTED:
                        self._resets += 1
        return self._resets

    # -- draining between calls -----------------------------------------------------------

    def start_draining(self) -> None:
        """Read and discard iopub between calls: output a background thread of the kernel
        sends after its cell ended is not for anyone, and must not wait in our queues."""
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain_forever())

    async def _drain_forever(self) -> None:
        sock = self._client.iopub_channel.socket
        while True:
            try:
                await sock.recv_multipart(copy=False)  # not deserialized: discarded as frames
            except zmq.ZMQError:
                return  # closed

    def _stop_draining_now(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None

    async def _stop_draining(self) -> None:
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.cancel()
            # wait() rather than await: our own cancellation must still reach the caller.
            await asyncio.wait([drainer])

    async def _iopub(self, timeout: float) -> dict[str, Any] | str:
        """The next iopub message, or a description of why it was unreadable (raises Empty).

        jupyter_client's deserialisation fails on whatever the kernel's code forges (a bad
        signature, a huge integer, deep nesting): such a message is consumed and reported."""
        try:
            msg = await self._client.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            raise
        except Exception as exc:  # hostile bytes: a message, not a failure of the run
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        return msg if isinstance(msg, dict) else "not a message"

    async def _shell(self, timeout: float) -> dict[str, Any] | None:
        """The next shell message (None for an unreadable one; raises Empty)."""
        try:
            msg = await self._client.get_shell_msg(timeout=timeout)
        except queue.Empty:
            raise
        except Exception:
            return None
        return msg if isinstance(msg, dict) else None

    async def wait_ready(self, timeout: float, alive: Callable[[], bool]) -> None:
        """Return once the kernel answers on shell *and* iopub is subscribed.

        A SUB socket drops what is published before its subscription lands, so a kernel_info
        reply alone does not prove that outputs will reach us; its busy/idle status does.
        The request is repeated every ``_READY_STEP_S`` until a status arrives, and the reply
        and status of any of them count: a start (which is what this waits for) is not then
        rounded up to a long retry step, nor stalled when a reply is slower than one step."""
        deadline = time.monotonic() + timeout
        sent: set[str] = set()
        got_reply = False
        while True:
            sent.add(self._client.kernel_info())
            step_deadline = min(deadline, time.monotonic() + _READY_STEP_S)
            while time.monotonic() < step_deadline:
                wait = max(0.01, step_deadline - time.monotonic())
                try:
                    if not got_reply:
                        got_reply = _answers(await self._shell(wait), sent)
                    else:
                        msg = await self._iopub(wait)
                        if _answers(msg, sent):
                            await self._drain_iopub()
                            await self._drain_shell()  # replies to the repeated requests
                            return
                except queue.Empty:
                    pass
            if not alive():
                raise KernelNotReady("the kernel process exited while starting")
            if self._poll_resets():  # still sending oversized messages: not worth waiting for
                raise KernelNotReady("the kernel closed the connection (an oversized message)")
            if time.monotonic() >= deadline:
                raise KernelNotReady(f"the kernel did not answer within {timeout:.0f} s")

    async def _drain_iopub(self) -> None:
        sock = self._client.iopub_channel.socket
        while await sock.poll(0):
            await sock.recv_multipart(copy=False)

    async def run_silent(self, code: str, timeout: float) -> dict[str, Any]:
        """Run setup code without history or broadcast outputs; return the reply content."""
        msg_id = self._client.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = await self._shell(max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if reply is not None and _parent_id(reply) == msg_id:
                await self._drain_iopub()
                return _dict(reply.get("content"))
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
        await self._stop_draining()
        try:
            for attempt in range(2):
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
                if must_restart or await self._wait_reply(msg_id) != "aborted":
                    break
                if attempt == 0 and not result.outputs:
                    # ipykernel aborts what arrives shortly after an error (here: the interrupted,
                    # cancelled call before this one). The code did not run: send it again.
                    await asyncio.sleep(0.2)
                    continue
                result.status = "error"
                result.note = "the kernel did not run this code (aborted after an earlier error)"
            if self._poll_resets() and not must_restart and alive():
                dropped = (
                    f"a message from the kernel was larger than the {self._limit_mb:.0f} MiB limit "
                    "and was dropped, so some output of this call is missing"
                )
                result.note = f"{result.note}; {dropped}" if result.note else dropped
            return result, must_restart
        finally:
            self.start_draining()

    async def settle(self, timeout: float) -> bool:
        """Wait until a request we stopped waiting for (a cancelled call) has finished.

        False when it is still running after ``timeout``: the kernel must be restarted."""
        msg_id, self._unfinished = self._unfinished, None
        if msg_id is None:
            return True
        await self._stop_draining()
        try:
            status = await self._wait_reply(msg_id, timeout)
            await self._drain_iopub()
        finally:
            self.start_draining()
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
                msg = await self._iopub(_POLL_S)
            except queue.Empty:
                if not alive():
                    return ExecutionResult("restarted", outputs, "the Python process died"), True
                if self._poll_resets():
                    # A reset iopub connection may have lost the idle status: the shell reply
                    # says the cell has finished as well.
                    status = await self._wait_reply(msg_id, timeout=0.01)
                    if status is not None:
                        self._early_reply = (msg_id, status)
                        break
                continue
            if isinstance(msg, str):
                # Unreadable, so we cannot tell whose it is: only this call's code can send now.
                produced: list[Output] = [_malformed("message", msg)]
            else:
                if _parent_id(msg) != msg_id:
                    continue
                msg_type = msg.get("msg_type")
                content = msg.get("content")
                if msg_type == "status":
                    if isinstance(content, dict) and content.get("execution_state") == "idle":
                        break
                    continue
                produced = to_outputs(msg_type, content, self._max_image_bytes)
            for out in produced:
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
        if self._early_reply is not None and self._early_reply[0] == msg_id:
            status = self._early_reply[1]
            self._early_reply = None
            return status
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = await self._shell(max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if reply is not None and _parent_id(reply) == msg_id:
                return str(_dict(reply.get("content")).get("status"))
        return None

    async def _drain_shell(self) -> None:
        sock = self._client.shell_channel.socket
        while await sock.poll(0):
            await sock.recv_multipart(copy=False)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _parent_id(msg: object) -> object:
    """The ``msg_id`` a message answers, whatever shape the kernel gave it."""
    if not isinstance(msg, dict):
        return None
    return _dict(msg.get("parent_header")).get("msg_id")


def _answers(msg: object, msg_ids: set[str]) -> bool:
    """Whether ``msg`` answers one of ``msg_ids`` (its parent id may be anything, even unhashable)."""
    parent = _parent_id(msg)
    return isinstance(parent, str) and parent in msg_ids


def _malformed(what: str, why: str) -> TextOutput:
    return TextOutput("stderr", f"[a malformed {what} from the kernel was dropped: {why}]\n")


def _decode_image(mime: str, raw: object, max_bytes: int) -> Output:
    """The bytes of a base64 image, checked for type and size before anything is decoded."""
    if not isinstance(raw, str):
        return _malformed(f"{mime} output", f"its data is a {type(raw).__name__}, not base64 text")
    # Size first, from the text: 4 characters carry 3 bytes (line breaks only make it smaller).
    if len(raw) // 4 * 3 > max_bytes:
        size_mb = len(raw) // 4 * 3 / _MIB
        return TextOutput(
            "stderr",
            f"[an image of about {size_mb:.0f} MiB was not saved: larger than the "
            f"{max_bytes / _MIB:g} MiB limit for output files]\n",
        )
    try:
        data = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        return _malformed(f"{mime} output", f"invalid base64 ({exc})")
    if not data:
        return _malformed(f"{mime} output", "empty image")
    return ImageOutput(mime, data)


def _text_field(content: dict[str, Any], key: str) -> str | None:
    value = content.get(key, "")
    return value if isinstance(value, str) else None


def to_outputs(msg_type: object, content: object, max_image_bytes: int) -> list[Output]:
    """The outputs of one iopub message of this call; every field is checked, since the
    kernel's code can send anything (a bad field is an error line, never an exception)."""
    if not isinstance(content, dict):
        return [_malformed(f"{msg_type!s:.40} message", "its content is not an object")]
    if msg_type == "stream":
        text = _text_field(content, "text")
        if text is None:
            return [_malformed("stream message", "its text is not a string")]
        return [TextOutput("stderr" if content.get("name") == "stderr" else "stdout", text)]
    if msg_type == "error":
        ename, evalue = _text_field(content, "ename"), _text_field(content, "evalue")
        traceback = content.get("traceback", [])
        if ename is None or evalue is None:
            return [_malformed("error message", "its ename or evalue is not a string")]
        if not isinstance(traceback, list) or not all(isinstance(line, str) for line in traceback):
            return [
                _malformed("error message", "its traceback is not a list of strings"),
                ErrorOutput(ename, evalue, []),
            ]
        return [ErrorOutput(ename, evalue, traceback[-_MAX_TRACEBACK_LINES:])]
    if msg_type in ("execute_result", "display_data", "update_display_data"):
        data = content.get("data") or {}
        if not isinstance(data, dict):
            return [_malformed(f"{msg_type} message", "its data is not an object")]
        for mime in _IMAGE_MIMES:
            if mime in data:
                return [_decode_image(mime, data[mime], max_image_bytes)]
        if "text/plain" not in data:
            return []
        text = data["text/plain"]
        if not isinstance(text, str):
            return [_malformed(f"{msg_type} message", "its text/plain is not a string")]
        return [TextOutput("result" if msg_type == "execute_result" else "display", text)]
    return []
