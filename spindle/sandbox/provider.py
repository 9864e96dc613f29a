"""The sandbox provider interface: what the session manager needs from an isolation backend.

A provider starts isolated, ready-to-run Python kernels ("sessions"); a session runs code,
holds files under /mnt/data and can be closed. The manager (pooling, one session per thread,
lifetimes) and the tool only talk to these two classes, so a remote provider (kernels in pods
or on other hosts) can be added next to the local bubblewrap one without touching either.

Every implementation must guarantee: code never runs outside the isolation boundary (if the
boundary cannot be built, ``start`` raises ``SandboxUnavailable``); the code's own failures,
timeouts and resource limits come back in an ``ExecutionResult``, never as exceptions; and
``close`` releases everything, even for a session whose kernel is dead.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from spindle.sandbox.settings import SandboxSettings

DATA_DIR = "/mnt/data"


@dataclass
class TextOutput:
    """Text the code produced: a stream, the cell's result, or the text form of a display."""

    kind: Literal["stdout", "stderr", "result", "display"]
    text: str


@dataclass
class ImageOutput:
    """An image the code displayed (a matplotlib figure arrives as ``image/png``)."""

    mime: str
    data: bytes


@dataclass
class ErrorOutput:
    """An exception raised by the code (traceback lines may contain ANSI colour codes)."""

    ename: str
    evalue: str
    traceback: list[str]


Output = TextOutput | ImageOutput | ErrorOutput
OutputCallback = Callable[[Output], Awaitable[None]]

# ok: ran to the end; error: raised; timeout: interrupted (state kept); restarted: the session
# had to be killed and started again (state lost, files kept) after a timeout or a crash.
Status = Literal["ok", "error", "timeout", "restarted"]


@dataclass
class ExecutionResult:
    status: Status
    outputs: list[Output] = field(default_factory=list)
    # Why the call did not end normally, written for the model (e.g. "out of memory").
    note: str | None = None


@dataclass(frozen=True)
class SandboxFile:
    """A regular file under /mnt/data; ``path`` is relative to /mnt/data."""

    path: str
    size: int
    mtime_ns: int


class SandboxSession(abc.ABC):
    """One isolated, stateful Python kernel with its own /mnt/data. Not shared between threads."""

    id: str

    @abc.abstractmethod
    async def execute(
        self, code: str, *, timeout: float, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        """Run ``code`` as a notebook cell; stream each output to ``on_output`` as it arrives.

        Called by the manager's lease holder, one call at a time per session. On timeout the
        kernel is interrupted (state kept); if it does not stop, or if it dies, the session
        restarts itself (state lost, files kept) and says so in the result."""

    @abc.abstractmethod
    async def put_file(self, name: str, data: bytes) -> str:
        """Create a new file in /mnt/data named ``name`` (or a deduplicated variant, never
        overwriting anything) and return its path relative to /mnt/data."""

    @abc.abstractmethod
    async def list_files(self) -> list[SandboxFile]:
        """Regular files under /mnt/data (symlinks and special files are ignored)."""

    @abc.abstractmethod
    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """Bytes of a regular file under /mnt/data; raises ``ValueError`` for anything else
        or for a file larger than ``max_bytes``."""

    @abc.abstractmethod
    async def delete_file(self, path: str) -> bool:
        """Remove the entry at ``path`` under /mnt/data (a link itself, never its target);
        False when there was none (or it is a directory)."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether the kernel process is still running (cheap; no I/O)."""

    async def memory_bytes(self) -> int | None:
        """Memory charged to the session, when the provider can tell."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Kill the kernel and release every resource. Idempotent; never raises."""


class SandboxProvider(abc.ABC):
    """Starts sessions. One instance per process, owned by the session manager."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def start(self) -> None:
        """Check the host and prepare shared assets; called once before any session.

        Raises ``SandboxUnavailable`` with a message saying what is missing and how to fix it."""

    @abc.abstractmethod
    async def create_session(self) -> SandboxSession:
        """Start a session whose kernel is ready and has the preload modules imported.

        Raises ``SessionFailed`` when it cannot."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Release provider-wide resources (sessions are closed by the manager before)."""


def build_provider(settings: SandboxSettings, protected_paths: list[Path] | None = None) -> SandboxProvider:
    """The explicit factory: one branch per provider name in ``SandboxSettings.provider``.

    ``protected_paths`` (the server's data dir) must never be visible inside a sandbox; a
    provider refuses to start when its mounts would expose them."""
    if settings.provider == "bubblewrap":
        from spindle.sandbox.local import BubblewrapProvider

        return BubblewrapProvider(settings, protected_paths)
    raise ValueError(f"unknown sandbox provider {settings.provider!r}")
