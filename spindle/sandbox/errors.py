"""Errors raised by the sandbox subsystem.

    SandboxError
    ├── SandboxUnavailable   the sandbox cannot be built on this host (no bwrap, no cgroups...);
    │                        code is never run unsandboxed, the tool refuses with this message
    ├── SandboxCapacityError every session slot is busy
    └── SessionFailed        a session could not start or died in a way a restart cannot fix

Limits that trip during a call (timeout, memory, processes) are *not* exceptions: they are
reported in the ``ExecutionResult`` so the model can read them and the run goes on.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of the sandbox's own errors."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot be built here; the message says why and how to fix it."""


class SandboxCapacityError(SandboxError):
    """No session slot is free (``SPINDLE_SANDBOX_MAX_SESSIONS`` reached, all busy)."""


class SessionFailed(SandboxError):
    """A session failed to start or to restart."""
