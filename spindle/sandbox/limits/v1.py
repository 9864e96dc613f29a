"""Per-session limits with cgroup v1 (memory, pids, cpu).

Each session gets a cgroup named after it under ``<controller root>/<cgroup_parent>/<instance>/``
in the memory, pids and cpu hierarchies. The launcher (running as root, before it drops to the
session's uid) moves itself into them, so every process of the session is counted from its
first instruction. All the files stay root's; the sandbox never sees /sys either.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from spindle.sandbox.errors import SandboxUnavailable
from spindle.sandbox.limits.base import Limits, LimitsBackend, SessionLimits, read_int_field

CONTROLLERS = ("memory", "pids", "cpu")
_CFS_PERIOD_US = 100_000
_MIB = 1024 * 1024


def find_v1_mounts(mounts_file: str = "/proc/self/mounts") -> dict[str, Path]:
    """Map each v1 controller to its mount point (``cpu`` may be co-mounted as ``cpu,cpuacct``)."""
    found: dict[str, Path] = {}
    with open(mounts_file, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 4 or parts[2] != "cgroup":
                continue
            options = set(parts[3].split(","))
            for ctl in CONTROLLERS:
                if ctl in options and ctl not in found:
                    found[ctl] = Path(parts[1])
    return found


def _rmdir_retry(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # still busy for a moment after the last process is reaped
            time.sleep(0.02)


class SessionCgroupV1(SessionLimits):
    """The cgroup directories of one session, one per controller."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    @property
    def join_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths.values()]

    def pids(self) -> list[int]:
        """Every process of the session (the pids hierarchy is the one that counts them all)."""
        try:
            text = (self.paths["pids"] / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(x) for x in text.split()]

    def memory_usage(self) -> int:
        """Bytes charged to the session (its processes and the tmpfs pages they wrote)."""
        return int((self.paths["memory"] / "memory.usage_in_bytes").read_text())

    def set_memory(self, memory_bytes: int) -> None:
        # memsw may never be below the memory limit: memory first when lowering, memsw first
        # when raising (as for the instance's total).
        mem = self.paths["memory"]
        files = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        current = int((mem / files[0]).read_text())
        for name in files if memory_bytes < current else reversed(files):
            with contextlib.suppress(FileNotFoundError):  # no swap accounting: no memsw file
                (mem / name).write_text(str(memory_bytes))
        super().set_memory(memory_bytes)

    def oom_kills(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return read_int_field((self.paths["memory"] / "memory.oom_control").read_text(), "oom_kill")
        return 0

    def pids_limit_hits(self) -> int:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.paths["pids"] / "pids.events").read_text().split()[1])
        return 0

    def remove(self) -> None:
        for path in self.paths.values():
            _rmdir_retry(path)


class CgroupV1(LimitsBackend):
    """Session cgroups under ``<controller>/<parent>/<instance>/``.

    Each server process is one *instance*, so several servers on one host never touch each
    other's sessions; a crashed instance's cgroups are removed by the next one to start."""

    name = "cgroup v1"

    def __init__(self, parent: str, instance: str, total_memory_bytes: int = 0) -> None:
        self._parent_name = parent.strip("/")
        self._instance = instance
        self._total_memory = total_memory_bytes
        self._parents: dict[str, Path] = {}

    def setup(self) -> None:
        mounts = find_v1_mounts()
        missing = [c for c in CONTROLLERS if c not in mounts]
        if missing:
            raise SandboxUnavailable(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        for ctl in CONTROLLERS:
            parent = mounts[ctl] / self._parent_name
            try:
                parent.mkdir(exist_ok=True)
                (parent / self._instance).mkdir(exist_ok=True)
            except OSError as exc:
                raise SandboxUnavailable(
                    f"cannot create cgroups under {parent} ({exc.strerror}); cgroup v1 needs root"
                ) from exc
            self._parents[ctl] = parent
        if self._total_memory:
            # Shared by every instance: the total for all sandboxes on this host. memsw may
            # never be below the memory limit: memory first when lowering, memsw first otherwise.
            memory = self._parents["memory"]
            value = str(self._total_memory)
            files = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            current = int((memory / files[0]).read_text())
            for name in files if self._total_memory < current else reversed(files):
                try:
                    (memory / name).write_text(value)
                except FileNotFoundError:  # no swap accounting
                    continue
                except OSError as exc:
                    raise SandboxUnavailable(
                        f"cannot set the sandboxes' total memory limit ({exc.strerror}); lower "
                        "SPINDLE_SANDBOX_TOTAL_MEMORY_MB or stop the sessions that use it"
                    ) from exc

    def create(self, name: str, limits: Limits) -> SessionCgroupV1:
        paths = {ctl: self._parents[ctl] / self._instance / name for ctl in CONTROLLERS}
        for path in paths.values():
            path.mkdir(parents=True, exist_ok=True)
        mem = paths["memory"]
        (mem / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        # With swap present, memsw must also be capped or the limit only moves pages to swap.
        with contextlib.suppress(FileNotFoundError):
            (mem / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
        (paths["pids"] / "pids.max").write_text(str(limits.pids_max))
        (paths["cpu"] / "cpu.cfs_period_us").write_text(str(_CFS_PERIOD_US))
        (paths["cpu"] / "cpu.cfs_quota_us").write_text(str(max(1000, int(limits.cpus * _CFS_PERIOD_US))))
        return SessionCgroupV1(paths)

    def enforced(self, limits: Limits) -> list[str]:
        total = f", all sessions {self._total_memory // _MIB} MiB" if self._total_memory else ""
        return [
            f"memory {limits.memory_bytes // _MIB} MiB incl. swap (memory.limit_in_bytes, memsw{total})",
            f"processes {limits.pids_max} (pids.max)",
            f"CPU {limits.cpus:g} cores (cpu.cfs_quota_us)",
        ]

    def instances(self) -> list[str]:
        parent = self._parents.get("pids")
        return sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent else []

    def remove_instance(self, instance: str) -> None:
        if len(self._parents) != len(CONTROLLERS):
            return  # setup never completed: nothing was created
        sessions: set[str] = set()
        for parent in self._parents.values():
            with contextlib.suppress(OSError):
                sessions |= {p.name for p in (parent / instance).iterdir() if p.is_dir()}
        for name in sessions:
            cg = SessionCgroupV1({ctl: self._parents[ctl] / instance / name for ctl in CONTROLLERS})
            cg.kill_all()
            cg.remove()
        SessionCgroupV1({ctl: self._parents[ctl] / instance for ctl in CONTROLLERS}).remove()
