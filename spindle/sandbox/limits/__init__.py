"""Per-session resource limits behind one interface: cgroup v1, cgroup v2 or rlimits.

``select_backend`` picks the first that works on this host (or the one the settings name) and
``describe`` is the start-up line saying which limits hold and which do not.
"""

from __future__ import annotations

from pathlib import Path

from spindle.sandbox.errors import SandboxUnavailable
from spindle.sandbox.limits.base import Limits, LimitsBackend, Rlimits, SessionLimits
from spindle.sandbox.limits.rlimits import RlimitsOnly
from spindle.sandbox.limits.v1 import CgroupV1
from spindle.sandbox.limits.v2 import CgroupV2

__all__ = [
    "CgroupV1",
    "CgroupV2",
    "Limits",
    "LimitsBackend",
    "Rlimits",
    "RlimitsOnly",
    "SessionLimits",
    "select_backend",
    "describe",
]

_ORDER = {
    "auto": ("cgroup_v1", "cgroup_v2", "rlimits"),
    "cgroup_v1": ("cgroup_v1",),
    "cgroup_v2": ("cgroup_v2",),
    "rlimits": ("rlimits",),
}


def _make(
    kind: str,
    *,
    parent: str,
    instance: str,
    instance_dir: Path,
    total_memory: int,
    v2_path: str,
    root: bool,
    server_procs: int,
    max_sessions: int,
) -> LimitsBackend:
    if kind == "cgroup_v1":
        return CgroupV1(parent, instance, total_memory)
    if kind == "cgroup_v2":
        return CgroupV2(parent, instance, total_memory, base=v2_path)
    return RlimitsOnly(
        instance_dir, separate_uids=root, server_uid_procs=server_procs, max_sessions=max_sessions
    )


def select_backend(
    choice: str,
    *,
    parent: str,
    instance: str,
    instance_dir: Path,
    total_memory: int,
    v2_path: str,
    root: bool,
    server_procs: int = 0,
    max_sessions: int = 1,
) -> tuple[LimitsBackend, list[str]]:
    """Set up the first backend of ``choice`` that works; also returns why the others did not.

    ``auto`` never gives up: rlimits need nothing from the host. Naming a backend means that
    one or none, so a host that lost its cgroups is not silently weakened."""
    kinds = _ORDER[choice]
    if choice == "auto" and not root:
        kinds = ("cgroup_v2", "rlimits")  # v1 hierarchies cannot be delegated to a user
    skipped: list[str] = []
    for kind in kinds:
        backend = _make(
            kind,
            parent=parent,
            instance=instance,
            instance_dir=instance_dir,
            total_memory=total_memory,
            v2_path=v2_path,
            root=root,
            server_procs=server_procs,
            max_sessions=max_sessions,
        )
        try:
            backend.setup()
        except SandboxUnavailable as exc:
            if len(kinds) == 1:
                raise
            skipped.append(f"{backend.name}: {exc}")
            continue
        return backend, skipped
    raise AssertionError("the rlimits backend cannot fail")  # pragma: no cover


def describe(
    backend: LimitsBackend, limits: Limits, *, root: bool, disk_limited: bool, skipped: list[str]
) -> str:
    """The start-up line: which limits hold, and plainly which do not."""
    held = backend.enforced(limits)
    missing = backend.missing()
    if disk_limited:
        held.append(f"disk {limits.disk_bytes // (1024 * 1024)} MiB per session (tmpfs)")
    else:
        missing.append("disk space per session (only the size of each file)")
    if root:
        held.append("a host uid of its own per session")
    else:
        missing.append("a host uid per session (every session runs as the server's uid)")
    line = f"sandbox limits from {backend.name}: " + "; ".join(held)
    if missing:
        line += ". NOT enforced: " + "; ".join(missing)
    if skipped:
        line += ". Not used: " + "; ".join(skipped)
    return line
