"""Limits without cgroups: per-process rlimits only, for hosts with no usable cgroup.

The launcher sets, before it becomes bubblewrap: ``RLIMIT_AS`` (address space, the memory
limit plus 1 GiB for the mappings Python and its libraries reserve without using), ``RLIMIT_DATA``
(the memory limit), ``RLIMIT_NPROC`` (processes), ``RLIMIT_CPU`` (CPU seconds per process) and
``RLIMIT_FSIZE`` (largest file). These are weaker than cgroups, and the start-up line says so:
memory is per process (N processes may use N times the limit), CPU time is a total per process
rather than a rate, and ``RLIMIT_NPROC`` counts every process of the host uid (so it is exact
only when each session has a uid of its own, i.e. when the server runs as root).

Finding the session's processes: the launcher writes its pid into a file of the instance (the
sandbox never sees it); the session's processes are that process and its descendants. Every
process of the sandbox stays a descendant: bubblewrap's PID namespace reaps orphans inside.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from spindle.sandbox.limits.base import Limits, LimitsBackend, Rlimits, SessionLimits

_MIB = 1024 * 1024
_AS_HEADROOM = 1024 * _MIB
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


_BOOT_TIME = _boot_time()


def _process_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, state, start time) for every process on the host."""
    table: dict[int, tuple[int, str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with (
            contextlib.suppress(OSError, ValueError, IndexError),
            open(f"/proc/{entry}/stat", encoding="ascii") as fh,
        ):
            # The command name may contain spaces and parentheses: the fields follow the last ")".
            fields = fh.read().rsplit(")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), fields[0], int(fields[19]))
    return table


class SessionRlimits(SessionLimits):
    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self._root: tuple[int, int] | None = None  # (pid, start time) of the launcher

    @property
    def join_files(self) -> list[str]:
        return [str(self.pid_file)]

    def _launcher(self, table: dict[int, tuple[int, str, int]]) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if pid not in table:
            return None
        # The launcher wrote the file when it started: a process that started at another time
        # only reuses the pid (after a crash, say) and is not ours.
        start = table[pid][2]
        with contextlib.suppress(OSError):
            started = _BOOT_TIME + start / _CLK_TCK
            if abs(started - self.pid_file.stat().st_mtime) > 5:
                return None
        if self._root is None or self._root[0] != pid:
            self._root = (pid, start)
        elif self._root[1] != start:
            return None
        return pid

    def pids(self) -> list[int]:
        table = _process_table()
        root = self._launcher(table)
        if root is None:
            return []
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found: list[int] = []
        stack = [root]
        while stack:
            pid = stack.pop()
            if table[pid][1] != "Z":  # a zombie waits for its parent, it needs no kill
                found.append(pid)
            stack.extend(children.get(pid, []))
        return found

    def memory_usage(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/statm", encoding="ascii") as fh:
                fields = fh.read().split()
                total += (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")  # private RSS
        return total

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


class RlimitsOnly(LimitsBackend):
    name = "rlimits"

    def __init__(
        self, state_dir: Path, *, separate_uids: bool, server_uid_procs: int = 0, max_sessions: int = 1
    ) -> None:
        self._dir = state_dir
        self._separate_uids = separate_uids
        self._server_procs = server_uid_procs
        self._sessions = max_sessions

    def setup(self) -> None:
        pass  # nothing to create: the pid files live in the instance directory

    def create(self, name: str, limits: Limits) -> SessionRlimits:
        return SessionRlimits(self._dir / f".{name}.pid")

    def _nproc(self, limits: Limits) -> int:
        # Counted per host uid: exact with a uid per session. Otherwise the server and all its
        # sessions share one count, so it must leave room for every session at its maximum:
        # it bounds them together, and one session can use up what the others would have.
        if self._separate_uids:
            return limits.pids_max
        return self._server_procs + self._sessions * limits.pids_max

    def rlimits(self, limits: Limits) -> Rlimits:
        limit = super().rlimits(limits)
        limit.values.update(
            {
                "as": limits.memory_bytes + _AS_HEADROOM,
                "nproc": self._nproc(limits),
                "cpu": limits.cpu_seconds,
                "fsize": limits.disk_bytes,
            }
        )
        return limit

    def enforced(self, limits: Limits) -> list[str]:
        scope = (
            "per session uid" if self._separate_uids else "for all sessions and the server together (one uid)"
        )
        return [
            f"memory {limits.memory_bytes // _MIB} MiB per process (RLIMIT_DATA; RLIMIT_AS "
            f"{(limits.memory_bytes + _AS_HEADROOM) // _MIB} MiB)",
            f"processes {self._nproc(limits)} (RLIMIT_NPROC, {scope})",
            f"CPU time {limits.cpu_seconds} s per process (RLIMIT_CPU)",
            f"file size {limits.disk_bytes // _MIB} MiB (RLIMIT_FSIZE)",
        ]

    def missing(self) -> list[str]:
        missing = ["memory per session (all its processes together)", "CPU rate (cores)"]
        if not self._separate_uids:
            missing.append("a process limit per session")
        return [*missing, "reports of OOM kills and refused forks"]

    def instances(self) -> list[str]:
        return []  # leftovers are found through the instance directories

    def remove_instance(self, instance: str) -> None:
        """Kill what the sessions of a stopped instance left (its directory goes afterwards)."""
        with contextlib.suppress(OSError):
            for pid_file in (self._dir.parent / instance).glob(".*.pid"):
                SessionRlimits(pid_file).kill_all()
