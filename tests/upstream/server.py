"""Running the scripted upstream: in a background thread (in-process tests) or in the foreground.

Both bind the listening socket before uvicorn starts, so port 0 works and the real port is
known at once. A short graceful-shutdown timeout keeps ``stop()`` prompt even when a scripted
``hang`` stream is still open.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from .app import create_app
from .script import ScriptBook

_GRACEFUL_SHUTDOWN_S = 1


class UpstreamHandle:
    """A running in-thread upstream: its URLs, direct access to its script, and ``stop()``."""

    def __init__(
        self, root_url: str, book: ScriptBook, server: uvicorn.Server, thread: threading.Thread
    ) -> None:
        self.root_url = root_url
        self.book = book
        self._server = server
        self._thread = thread

    @property
    def base_url(self) -> str:
        """What an OpenAI client or ``SPINDLE_LLM_BASE_URL`` takes: the root plus ``/v1``."""
        return self.root_url + "/v1"

    def script(self, match: str, replies: list[dict[str, Any]]) -> None:
        self.book.add_rule(match, replies)

    def requests(self) -> list[Any]:
        """Bodies of the chat requests received so far, oldest first."""
        return [entry.body for entry in self.book.requests()]

    def reset(self) -> None:
        self.book.reset()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> UpstreamHandle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def make_server(app: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
    return uvicorn.Server(config)


def start_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_key: str | None = None,
    delay_ms: float = 0.0,
    ready_timeout: float = 10.0,
) -> tuple[str, UpstreamHandle]:
    """Start an upstream on a daemon thread; returns ``(base_url, handle)`` once it accepts requests."""
    sock = bind(host, port)
    book = ScriptBook()
    server = make_server(create_app(book, api_key=api_key, delay_ms=delay_ms))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="scripted-upstream", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the scripted upstream did not start")
        time.sleep(0.01)
    handle = UpstreamHandle(f"http://{host}:{sock.getsockname()[1]}", book, server, thread)
    return handle.base_url, handle


def serve(
    host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None, delay_ms: float = 0.0
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, printing the URL once it is bound."""
    sock = bind(host, port)
    server = make_server(create_app(api_key=api_key, delay_ms=delay_ms))
    mode = "instant" if not delay_ms else f"{delay_ms:g} ms between chunks"
    print(f"scripted upstream on http://{host}:{sock.getsockname()[1]}/v1 ({mode})", flush=True)
    server.run(sockets=[sock])
