"""Sandboxed, stateful Python sessions for the Code Interpreter tool.

Layout: ``provider`` (the interface and its factory), ``local`` + ``bwrap`` + ``seccomp`` +
``cgroups`` + ``hostfs`` (the bubblewrap provider), ``kernel`` (the Jupyter protocol),
``manager`` (one session per thread, the pool, lifetimes), ``settings``.
"""

from spindle.sandbox.errors import SandboxCapacityError, SandboxError, SandboxUnavailable, SessionFailed
from spindle.sandbox.manager import Lease, SessionManager, ThreadSession
from spindle.sandbox.provider import (
    DATA_DIR,
    ErrorOutput,
    ExecutionResult,
    ImageOutput,
    Output,
    SandboxFile,
    SandboxProvider,
    SandboxSession,
    TextOutput,
    build_provider,
)
from spindle.sandbox.settings import SandboxSettings

__all__ = [
    "DATA_DIR",
    "ErrorOutput",
    "ExecutionResult",
    "ImageOutput",
    "Lease",
    "Output",
    "SandboxCapacityError",
    "SandboxError",
    "SandboxFile",
    "SandboxProvider",
    "SandboxSession",
    "SandboxSettings",
    "SandboxUnavailable",
    "SessionFailed",
    "SessionManager",
    "TextOutput",
    "ThreadSession",
    "build_provider",
]
