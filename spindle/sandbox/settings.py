"""Settings of the Code Interpreter sandbox, read from ``SPINDLE_SANDBOX_*`` variables.

Composed into the main ``Settings`` by the core; every field has a default and a description
(``docs/sandbox.md`` lists them all). Limits apply per session unless the name says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_MIB = 1024 * 1024
UID_RANGE = 65536  # session uids per host range
_MAX_UID_BASE = 2**31 - 1 - UID_RANGE


class SandboxSettings(BaseSettings):
    """The sandbox provider, the session pool and the per-session limits."""

    model_config = SettingsConfigDict(env_prefix="SPINDLE_SANDBOX_", extra="ignore")

    enabled: bool = Field(
        default=True,
        description="Run code at all. When false, code_interpreter runs fail with a clear error.",
    )
    provider: Literal["bubblewrap"] = Field(
        default="bubblewrap",
        description="Sandbox provider. `bubblewrap`: local namespaces + cgroups or rlimits (root or rootless; "
        "see the README's sandbox hosts).",
    )
    bwrap_path: str = Field(
        default="bwrap", description="The bubblewrap executable (name on PATH or absolute path)."
    )
    python: Path = Field(
        default=Path("/opt/spindle-sandbox/venv/bin/python"),
        description="Python interpreter run inside the sandbox (a venv with ipykernel and the data stack; "
        "`scripts/setup_sandbox.sh` creates it). Its venv and base installation are mounted read-only.",
    )
    extra_ro_binds: str = Field(
        default="",
        description="Comma-separated extra host paths mounted read-only at the same path inside the sandbox.",
    )
    work_dir: Path = Field(
        default=Path("/run/spindle-sandbox"),
        description="Host directory holding one size-limited tmpfs per session (its /mnt/data, /tmp and kernel "
        "sockets). Rootless: plain directories, and the default becomes `$XDG_RUNTIME_DIR/spindle-sandbox`.",
    )
    cgroup_parent: str = Field(
        default="spindle-sandbox",
        description="cgroup in which session cgroups are made: under each v1 controller's root, or under the "
        "cgroup v2 base (see `CGROUP_V2_PATH`).",
    )
    limits: Literal["auto", "cgroup_v1", "cgroup_v2", "rlimits"] = Field(
        default="auto",
        description="How session limits are enforced. `auto`: cgroup v1 (root only), else cgroup v2, else "
        "rlimits, and the start-up line says which limits hold; naming one means that one or no code runs.",
    )
    cgroup_v2_path: str = Field(
        default="",
        description="cgroup v2 base, relative to the cgroup2 mount, delegated to Spindle. Empty: the mount's "
        "root when the server is root, else the server's own cgroup (systemd `Delegate=yes`).",
    )
    uid_base: int = Field(
        default=2_100_000_000,
        description="First host uid of the range used for sessions (65536 uids, no passwd entries needed; "
        "the range must end below 2^31). Locked host-wide in /run/spindle-sandbox-uids. Root only.",
    )
    max_sessions: int = Field(
        default=32, description="Sessions alive at once in this process (pool included)."
    )
    pool_size: int = Field(
        default=2, description="Pre-started idle sessions kept ready for new threads (0 disables the pool)."
    )
    session_lifetime_s: int = Field(
        default=3600, description="A thread's session ends this long after it was assigned."
    )
    idle_timeout_s: int = Field(
        default=1200, description="A thread's session ends after this long without a call."
    )
    memory_mb: int = Field(
        default=2048, description="Memory per session (cgroup limit and per-process data limit), MiB."
    )
    total_memory_mb: int = Field(
        default=0,
        description="Memory for all sessions together (parent cgroup), MiB. 0 = automatic: the machine's "
        "memory minus a reserve for the server and the host (a quarter of it, at least 2048 MiB); -1 = no limit.",
    )
    pids_max: int = Field(default=256, description="Processes and threads per session.")
    cpus: float = Field(default=1.0, description="CPU time per session, in cores (CFS quota).")
    disk_mb: int = Field(
        default=1024, description="Size of the session's tmpfs, shared by /mnt/data and /tmp, MiB."
    )
    call_timeout_s: float = Field(
        default=120.0, description="Wall time one call may run before it is interrupted."
    )
    interrupt_grace_s: float = Field(
        default=5.0,
        description="After an interrupt, how long to wait before the session is killed and restarted.",
    )
    start_timeout_s: float = Field(
        default=60.0, description="Time allowed for a session to start and preload modules."
    )
    fast_start: bool = Field(
        default=True,
        description="Fork new sessions' kernels from a template process with the preload modules "
        "already imported (each still gets its own bubblewrap sandbox, uid, cgroups and seccomp "
        "filter); false starts a fresh interpreter per session. Root servers with cgroup v1 or v2 "
        "only: rootless and rlimits-only servers always start fresh interpreters.",
    )
    preload: str = Field(
        default="numpy,pandas,matplotlib.pyplot",
        description="Comma-separated modules imported when a session starts, so the first call does not pay for them.",
    )
    max_output_chars: int = Field(
        default=20000,
        description="Longest tool output returned to the model; longer output is truncated with a note.",
    )
    max_output_files: int = Field(
        default=20, description="Files written to /mnt/data that one call may turn into Files."
    )
    max_output_file_mb: int = Field(
        default=64,
        description="Largest /mnt/data file or image turned into a File, MiB (kernel messages are limited to "
        "what a base64 image of this size needs).",
    )
    max_output_call_mb: int = Field(
        default=256, description="Bytes of Files (images and /mnt/data files) one call may create, MiB."
    )
    max_output_project_mb: int = Field(
        default=4096,
        description="Bytes of Code Interpreter output Files (purpose `assistants_output`) a project may hold, "
        "MiB; past it no more are made until some are deleted.",
    )

    @field_validator("uid_base")
    @classmethod
    def _uid_range_fits(cls, value: int) -> int:
        # bubblewrap writes uid maps as signed ints: a uid past 2^31 - 1 fails every session
        # ("setting up uid map: Invalid argument"), so say it at start instead.
        if not 1000 <= value <= _MAX_UID_BASE:
            raise ValueError(f"must be between 1000 and {_MAX_UID_BASE} (the range of {UID_RANGE} uids must "
                             "stay below 2^31)")
        return value

    def total_memory_bytes(self) -> int:
        """The limit for all sessions together (0 = none), with the automatic default resolved."""
        if self.total_memory_mb < 0:
            return 0
        if self.total_memory_mb > 0:
            return self.total_memory_mb * _MIB
        machine = machine_memory_bytes()
        reserve = max(2048 * _MIB, machine // 4)
        # Never below one session's limit, or no session could ever start.
        return max(self.memory_mb * _MIB, machine - reserve)


def machine_memory_bytes() -> int:
    """Physical memory of the host (MemTotal)."""
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemTotal missing from /proc/meminfo")
