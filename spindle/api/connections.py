"""Connection guards for the HTTP server as shipped (uvicorn with httptools).

uvicorn times out only idle kept-alive connections, and any byte restarts that timer; a
connection that never finishes its headers, or trickles a body, stays open forever
(slowloris: 19,900 of them used every file descriptor). This protocol adds what it lacks:

* a header deadline: a request's headers must be complete within
  ``SPINDLE_HTTP_HEADER_TIMEOUT_S`` of connecting (or of the previous response on a kept-alive
  connection), however slowly bytes keep coming; then the connection is closed;
* a header size cap (httptools has none): more than ``MAX_HEADER_BYTES`` → 431, closed;
* a body idle timeout: no body bytes for ``SPINDLE_HTTP_BODY_TIMEOUT_S`` while the app is
  waiting for them → closed (the app sees a client disconnect);
* a connection cap: at ``SPINDLE_HTTP_MAX_CONNECTIONS`` a new connection replaces the oldest
  one still sending its headers (a slowloris holds only what it can refill faster than that),
  or is refused with 503 when every connection is busy with a real request.

``serve`` also raises the open-file soft limit to the hard limit, so the cap, not the
kernel, decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from spindle.settings import ServerSettings

log = logging.getLogger(__name__)

# Request line plus headers; real clients send 1-2 KB (nginx allows 4 x 8 KB by default).
MAX_HEADER_BYTES = 64 * 1024
# What the cap leaves to everything else: the store, blobs being read, sandbox sessions, indexes.
AUTO_CONNECTION_SHARE = 2
AUTO_CONNECTIONS_MAX = 8192
_REPORT_EVERY_S = 10.0


def raise_open_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # keep what we have; the cap below follows it
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    if configured > 0:
        return configured
    return max(64, min(AUTO_CONNECTIONS_MAX, open_files // AUTO_CONNECTION_SHARE))


def _raw_response(status: str, message: str, error_type: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": None}}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class ConnectionGuard:
    """The limits, and the state all connections of one server share."""

    def __init__(self, *, header_timeout_s: float, body_timeout_s: float, max_connections: int,
                 max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        # Connections waiting for a request's headers, oldest first (dicts keep insertion order).
        self.waiting: dict[GuardedHttpToolsProtocol, None] = {}
        self.counts = {"header_timeout": 0, "header_too_large": 0, "body_timeout": 0, "evicted": 0, "refused": 0}
        self._reported = time.monotonic() - _REPORT_EVERY_S
        self._flush: asyncio.TimerHandle | None = None

    def note(self, what: str) -> None:
        """Count a closed connection. Counts are logged at most once per interval (the first at
        once), so an attack cannot flood the log, and none is lost."""
        self.counts[what] += 1
        if self._flush is None:
            delay = max(0.0, self._reported + _REPORT_EVERY_S - time.monotonic())
            self._flush = asyncio.get_running_loop().call_later(delay, self._report)

    def _report(self) -> None:
        self._flush = None
        self._reported = time.monotonic()
        shown = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in self.counts.items() if v)
        log.warning("closed connections (%s); %d connections still sending headers, limit %d open", shown,
                    len(self.waiting), self.max_connections)
        self.counts = dict.fromkeys(self.counts, 0)

    def evict_oldest_waiting(self) -> bool:
        oldest = next(iter(self.waiting), None)
        if oldest is None:
            return False
        oldest.close_quietly()
        self.note("evicted")
        return True


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    guard: ClassVar[ConnectionGuard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_message = False
        self._body_seen = 0.0
        super().connection_made(transport)
        if len(self.connections) > self.guard.max_connections and not self.guard.evict_oldest_waiting():
            self.guard.note("refused")
            transport.write(_raw_response("503 Service Unavailable", "The server has too many open connections; "
                                          "retry shortly.", "server_error"))
            self.close_quietly()
            return
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self._stop_body_timer()
        super().connection_lost(exc)

    def close_quietly(self) -> None:
        self._stop_waiting()
        self._stop_body_timer()
        if not self.transport.is_closing():
            self.transport.close()

    # -- headers -------------------------------------------------------------------------------
    def _await_headers(self) -> None:
        if self.transport.is_closing() or self in self.guard.waiting:
            return
        self._header_bytes = 0
        self.guard.waiting[self] = None
        self._header_deadline = self.loop.call_later(self.guard.header_timeout_s, self._header_timed_out)

    def _stop_waiting(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_timed_out(self) -> None:
        self._header_deadline = None
        if self in self.guard.waiting:
            self.guard.note("header_timeout")
            self.close_quietly()

    def data_received(self, data: bytes) -> None:
        waiting = self in self.guard.waiting
        if self._body_timer is not None:
            self._body_seen = self.loop.time()
        super().data_received(data)
        # Counted after parsing: the chunk that completes the headers may carry body bytes too.
        if waiting and self in self.guard.waiting:
            self._header_bytes += len(data)
            if self._header_bytes > self.guard.max_header_bytes:
                self.guard.note("header_too_large")
                self.transport.write(_raw_response(
                    "431 Request Header Fields Too Large",
                    f"The request line and headers exceed {self.guard.max_header_bytes} bytes.",
                    "invalid_request_error"))
                self.close_quietly()

    def on_message_begin(self) -> None:
        self._in_message = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()
        if self._in_message:  # a body may follow; on_message_complete stops the timer
            self._body_seen = self.loop.time()
            self._body_timer = self.loop.call_later(self.guard.body_timeout_s, self._body_check)

    # -- body ----------------------------------------------------------------------------------
    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_check(self) -> None:
        self._body_timer = None
        idle = self.loop.time() - self._body_seen
        if self.flow.read_paused:  # we stopped reading (the app is behind), not the client
            self._body_seen = self.loop.time()
            idle = 0.0
        if idle >= self.guard.body_timeout_s:
            self.guard.note("body_timeout")
            self.close_quietly()
            return
        self._body_timer = self.loop.call_later(self.guard.body_timeout_s - idle, self._body_check)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._stop_body_timer()
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            self._await_headers()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self._in_message:
            self._await_headers()


def protocol_for(guard: ConnectionGuard) -> type[GuardedHttpToolsProtocol]:
    """A protocol class bound to one server's guard (uvicorn instantiates it per connection)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})


def serve(app: Any, server: ServerSettings, fd: int | None = None) -> None:
    """Run ``app`` with uvicorn and the guards above; returns when the server stops. With
    ``fd``, accept on that already bound socket (``spindle serve --workers``) instead."""
    open_files = raise_open_file_limit()
    guard = ConnectionGuard(header_timeout_s=server.http_header_timeout_s, body_timeout_s=server.http_body_timeout_s,
                            max_connections=connection_cap(server.http_max_connections, open_files))
    log.info("connections: at most %d open (open-file limit %d), headers within %g s, body pauses under %g s",
             guard.max_connections, open_files, guard.header_timeout_s, guard.body_timeout_s)
    # Streams still open at SIGTERM get the drain timeout to end (their runs finish meanwhile:
    # a rolling restart must not cut them), not uvicorn's default of waiting forever.
    config = uvicorn.Config(app, host=server.host, port=server.port, http=protocol_for(guard),
                            fd=fd, log_level=server.log_level, access_log=server.log_level == "debug",
                            timeout_graceful_shutdown=max(5, int(server.drain_timeout_s)))
    _DrainingServer(config).run()


class _DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT the run engine stops claiming work at once, while uvicorn waits for
    open streams (the engine's own drain comes after, in the app's shutdown)."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        runtime = getattr(getattr(self.config.app, "state", None), "runtime", None)
        engine = getattr(runtime, "engine", None)
        if engine is not None:
            engine.begin_drain()
        super().handle_exit(sig, frame)
