"""Per-session limits with cgroup v2: ``memory.max`` (+ ``memory.swap.max``), ``pids.max``,
``cpu.max``, torn down with ``cgroup.kill``.

The sessions live in ``<base>/<cgroup_parent>/<instance>/<session>``. ``base`` is the cgroup
Spindle may manage: ``SPINDLE_SANDBOX_CGROUP_V2_PATH`` when set; otherwise, as root, the root
of the cgroup2 mount (as the v1 backend and Docker's cgroupfs driver do), and as an ordinary
user the server's own cgroup, which must be delegated to it (systemd ``Delegate=yes``, e.g.
``systemd-run --user -p Delegate=yes ...``, or a container's own cgroup namespace).

v2's "no internal processes" rule: a cgroup that hands controllers to its children (its
``cgroup.subtree_control``) may hold no processes itself. When ``base`` is the cgroup the
server runs in, the server first moves the processes of ``base`` into a leaf,
``<base>/<cgroup_parent>-server``; the true root cgroup is exempt from the rule.

Joining: the launcher writes its pid into the session's ``cgroup.procs``. v2 allows that only
if the writer may write the ``cgroup.procs`` of the common ancestor of both cgroups: as root
it always may; as an ordinary user the common ancestor is ``base``, which is delegated to it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from spindle.sandbox.errors import SandboxUnavailable
from spindle.sandbox.limits.base import Limits, LimitsBackend, SessionLimits, read_int_field

CONTROLLERS = ("memory", "pids", "cpu")
_CPU_PERIOD_US = 100_000
_MIB = 1024 * 1024


def find_v2_mount(mounts_file: str = "/proc/self/mounts") -> Path | None:
    """The cgroup2 mount point (on a hybrid host, /sys/fs/cgroup/unified)."""
    with open(mounts_file, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "cgroup2":
                return Path(parts[1])
    return None


def own_cgroup(cgroup_file: str = "/proc/self/cgroup") -> str:
    """This process's cgroup v2 path (the ``0::`` line), relative to the mount."""
    with open(cgroup_file, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("0::"):
                return line[3:].strip()
    return "/"


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def _rmdir_retry(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # busy for a moment after the last process is reaped
            time.sleep(0.02)


class SessionCgroupV2(SessionLimits):
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def join_files(self) -> list[str]:
        return [str(self.path / "cgroup.procs")]

    def pids(self) -> list[int]:
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(x) for x in text.split()]

    def kill_all(self, timeout: float = 5.0) -> bool:
        # cgroup.kill (Linux 5.14) kills the whole subtree atomically: no fork can race it.
        with contextlib.suppress(OSError):
            _write(self.path / "cgroup.kill", "1")
        return super().kill_all(timeout)

    def memory_usage(self) -> int:
        return int((self.path / "memory.current").read_text())

    def set_memory(self, memory_bytes: int) -> None:
        # Lowering below what is in use makes the kernel reclaim, then OOM-kill: the session
        # is fresh from the pool when a container's limit is applied, so it rarely does.
        _write(self.path / "memory.max", str(memory_bytes))
        super().set_memory(memory_bytes)

    def oom_kills(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return read_int_field((self.path / "memory.events").read_text(), "oom_kill")
        return 0

    def pids_limit_hits(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return read_int_field((self.path / "pids.events").read_text(), "max")
        return 0

    def remove(self) -> None:
        _rmdir_retry(self.path)


class CgroupV2(LimitsBackend):
    name = "cgroup v2"

    def __init__(
        self,
        parent: str,
        instance: str,
        total_memory_bytes: int = 0,
        base: str = "",
        mount: Path | None = None,
    ) -> None:
        self._parent_name = parent.strip("/")
        self._instance = instance
        self._total_memory = total_memory_bytes
        self._base_setting = base
        self._mount = mount
        self.base: Path | None = None
        self._parent: Path | None = None

    def _choose_base(self, mount: Path) -> Path:
        if self._base_setting:
            return mount / self._base_setting.strip("/")
        if os.geteuid() == 0:
            return mount
        own = mount / own_cgroup().lstrip("/")
        # Another instance already moved us (or our parent) into the base's server leaf.
        return own.parent if own.name == self.server_leaf else own

    @property
    def server_leaf(self) -> str:
        return f"{self._parent_name}-server"

    def setup(self) -> None:
        mount = self._mount or find_v2_mount()
        if mount is None:
            raise SandboxUnavailable("no cgroup2 file system is mounted")
        base = self._choose_base(mount)
        try:
            available = set((base / "cgroup.controllers").read_text().split())
        except OSError as exc:
            raise SandboxUnavailable(f"cannot read {base}/cgroup.controllers ({exc.strerror})") from exc
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            raise SandboxUnavailable(f"cgroup v2 controllers not available in {base}: {', '.join(missing)}")
        try:
            if self._holds_processes(base):
                self._evacuate(base)
            self._enable(base)
            parent = base / self._parent_name
            parent.mkdir(exist_ok=True)
            self._enable(parent)
            (parent / self._instance).mkdir(exist_ok=True)
            self._enable(parent / self._instance)
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot create session cgroups under {base} ({exc.strerror}); as an ordinary user the "
                "server's cgroup must be delegated to it (systemd Delegate=yes)"
            ) from exc
        self.base, self._parent = base, parent
        if self._total_memory:
            try:
                _write(parent / "memory.max", str(self._total_memory))
            except OSError as exc:
                raise SandboxUnavailable(
                    f"cannot set the sandboxes' total memory limit ({exc.strerror}); lower "
                    "SPINDLE_SANDBOX_TOTAL_MEMORY_MB or stop the sessions that use it"
                ) from exc

    @staticmethod
    def _holds_processes(base: Path) -> bool:
        # The true root cgroup has no cgroup.type and is exempt from "no internal processes".
        if not (base / "cgroup.type").exists():
            return False
        return bool((base / "cgroup.procs").read_text().split())

    def _evacuate(self, base: Path) -> None:
        """Move the processes of ``base`` (this server among them) into a leaf of their own."""
        leaf = base / self.server_leaf
        leaf.mkdir(exist_ok=True)
        for _ in range(10):  # processes may fork meanwhile
            pids = (base / "cgroup.procs").read_text().split()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    _write(leaf / "cgroup.procs", pid)
        raise OSError(16, "processes keep appearing in the base cgroup")

    @staticmethod
    def _enable(cgroup: Path) -> None:
        enabled = set((cgroup / "cgroup.subtree_control").read_text().split())
        wanted = [f"+{c}" for c in CONTROLLERS if c not in enabled]
        if wanted:
            _write(cgroup / "cgroup.subtree_control", " ".join(wanted))

    def create(self, name: str, limits: Limits) -> SessionCgroupV2:
        assert self._parent is not None
        path = self._parent / self._instance / name
        path.mkdir(exist_ok=True)
        _write(path / "memory.max", str(limits.memory_bytes))
        # v1's memsw caps memory + swap together; in v2 swap is separate: none, or the limit
        # would only move pages to swap.
        with contextlib.suppress(FileNotFoundError):
            _write(path / "memory.swap.max", "0")
        _write(path / "pids.max", str(limits.pids_max))
        _write(path / "cpu.max", f"{max(1000, int(limits.cpus * _CPU_PERIOD_US))} {_CPU_PERIOD_US}")
        return SessionCgroupV2(path)

    def enforced(self, limits: Limits) -> list[str]:
        total = f", all sessions {self._total_memory // _MIB} MiB" if self._total_memory else ""
        return [
            f"memory {limits.memory_bytes // _MIB} MiB, no swap (memory.max, memory.swap.max{total})",
            f"processes {limits.pids_max} (pids.max)",
            f"CPU {limits.cpus:g} cores (cpu.max)",
        ]

    def instances(self) -> list[str]:
        if self._parent is None:
            return []
        return sorted(p.name for p in self._parent.iterdir() if p.is_dir())

    def remove_instance(self, instance: str) -> None:
        if self._parent is None:
            return
        root = self._parent / instance
        with contextlib.suppress(OSError):
            for session in [p for p in root.iterdir() if p.is_dir()]:
                cg = SessionCgroupV2(session)
                cg.kill_all()
                cg.remove()
        _rmdir_retry(root)
