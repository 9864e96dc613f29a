"""The interface every limits backend implements: cgroup v1, cgroup v2, rlimits.

A backend makes one *session limits* object per session. The launcher (``bwrap.LAUNCHER``)
writes its own pid into each of the object's ``join_files`` before it becomes bubblewrap, so
every process of the session is covered from its first instruction: for cgroups those are
``cgroup.procs`` files, for rlimits a pid file that lets the server find the session's
processes. Limits a backend cannot enforce are named by ``missing`` and logged at start.

All methods block (sysfs and /proc) and are called from worker threads.
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """What one session is allowed (from the settings)."""

    memory_bytes: int
    pids_max: int
    cpus: float
    disk_bytes: int
    cpu_seconds: int  # CPU time per process, for the rlimits backend only


@dataclass
class Rlimits:
    """Resource limits the launcher sets (``prlimit``) before it drops to the session uid."""

    values: dict[str, int] = field(default_factory=dict)

    def prlimit_args(self) -> list[str]:
        return [f"--{name}={value}" for name, value in self.values.items()]


class SessionLimits(abc.ABC):
    """The limits of one session and what they report."""

    # A memory limit of this session's own, below the settings' (a container's
    # ``memory_limit``); None: the settings' limit. Set by ``set_memory``.
    memory_override: int | None = None

    def set_memory(self, memory_bytes: int) -> None:
        """Change the memory limit of the whole session (cgroups). The per-process limits
        (RLIMIT_DATA, RLIMIT_AS) are the provider's to change: it knows the processes."""
        self.memory_override = memory_bytes

    @property
    @abc.abstractmethod
    def join_files(self) -> list[str]:
        """Files the launcher writes its pid into (as the server's uid, before dropping privileges)."""

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Every live process of the session."""

    def kill_all(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process until none is left; False if some survived ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    @abc.abstractmethod
    def memory_usage(self) -> int:
        """Bytes charged to the session."""

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in this session (0 if unknown)."""
        return 0

    def pids_limit_hits(self) -> int:
        """How many forks were refused because of the process limit (0 if unknown)."""
        return 0

    @abc.abstractmethod
    def remove(self) -> None:
        """Remove what ``create`` made (the session's processes are gone)."""


class LimitsBackend(abc.ABC):
    """Makes the per-session limits of one server instance."""

    name: str = ""

    @abc.abstractmethod
    def setup(self) -> None:
        """Check the host and create this instance's parents. Raises ``SandboxUnavailable``."""

    @abc.abstractmethod
    def create(self, name: str, limits: Limits) -> SessionLimits:
        """The limits of a new session called ``name`` (unique within the instance)."""

    def rlimits(self, limits: Limits) -> Rlimits:
        """Per-process limits the launcher sets. Every backend caps the data segment (a large
        allocation is then a MemoryError, not an OOM kill) and disables core dumps."""
        return Rlimits({"core": 0, "data": limits.memory_bytes})

    @abc.abstractmethod
    def enforced(self, limits: Limits) -> list[str]:
        """The limits that hold, for the start-up line."""

    def missing(self) -> list[str]:
        """Limits of the settings that this backend does not enforce, for the start-up line."""
        return []

    @abc.abstractmethod
    def instances(self) -> list[str]:
        """Instances with leftovers this backend can see (this one included)."""

    @abc.abstractmethod
    def remove_instance(self, instance: str) -> None:
        """Kill and remove every session of ``instance`` (a crashed or stopped server)."""


def read_int_field(text: str, key: str) -> int:
    """``key value`` lines (memory.events, pids.events, memory.oom_control): the value of ``key``."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0
