"""The local provider: ipykernels isolated by bubblewrap, limited by cgroups and a tmpfs.

One session = one host uid from the configured range, one tmpfs (size-limited; holds
/mnt/data, /tmp and the kernel's sockets), one cgroup per controller, one bubblewrap process
tree running ``ipykernel``. The server talks to the kernel over Unix sockets in the tmpfs.

Needs root on the host (cgroups, tmpfs mounts, switching to the session uid); the code
itself never runs as root. ``start`` checks all of it and runs a probe session end to end, so
a host that cannot build the sandbox is reported at start with the reason.

Processes are spawned from one dedicated thread: bubblewrap's ``--die-with-parent`` ties a
sandbox to the *thread* that forked it, so that thread must live as long as the provider.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import zmq.asyncio

from spindle.sandbox import bwrap, hostfs
from spindle.sandbox.cgroups import CgroupV1, SessionCgroup
from spindle.sandbox.errors import SandboxUnavailable, SessionFailed
from spindle.sandbox.kernel import KernelChannel, KernelNotReady
from spindle.sandbox.provider import (
    ExecutionResult,
    OutputCallback,
    SandboxFile,
    SandboxProvider,
    SandboxSession,
)
from spindle.sandbox.seccomp import compile_filter
from spindle.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
_MIB = 1024 * 1024


def _preload_code(modules: list[str]) -> str:
    # Runs silently at start; imports land in sys.modules only, the user namespace stays empty.
    # Importing pyplot once the shell exists also wires the inline backend's end-of-cell hook,
    # which turns figures left open into image/png outputs.
    return (
        "def __spindle_preload(names):\n"
        "    import importlib\n"
        "    for name in names:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except Exception as exc:\n"
        "            print(f'preload {name}: {exc!r}')\n"
        f"__spindle_preload({modules!r})\n"
        "del __spindle_preload\n"
    )


class BubblewrapProvider(SandboxProvider):
    name = "bubblewrap"

    def __init__(self, settings: SandboxSettings, protected_paths: list[Path] | None = None) -> None:
        self.settings = settings
        self._protected = [p.resolve() for p in (protected_paths or [])]
        self._work_dir = settings.work_dir
        self._cgroups = CgroupV1(settings.cgroup_parent, settings.total_memory_mb * _MIB)
        self._free_slots = list(range(settings.max_sessions + 1))  # +1: the start-up probe
        self._spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawn")
        self._lock_fd: int | None = None
        self._ro_binds: list[Path] = []
        self._bwrap = ""
        self._seccomp = b""
        self._assets: dict[str, bytes] = {}
        self.zmq_context: zmq.asyncio.Context | None = None

    # -- provider lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._check_host)
        self.zmq_context = zmq.asyncio.Context()
        probe = await self.create_session()
        try:
            result = await probe.execute("import os; print(os.getuid())", timeout=30)
            text = "".join(getattr(o, "text", "") for o in result.outputs).strip()
            if result.status != "ok" or text != str(bwrap.SANDBOX_UID):
                raise SandboxUnavailable(f"the probe session did not run code correctly: {result}")
            # Keep matplotlib's font cache so that later sessions do not rebuild it (~1 s each).
            files = await asyncio.to_thread(hostfs.snapshot, str(probe.root / "tmp" / ".matplotlib"))
            for name in files:
                if name.endswith(".json"):
                    self._assets[name] = await asyncio.to_thread(
                        hostfs.read_file, str(probe.root / "tmp" / ".matplotlib"), name, 16 * _MIB
                    )
        finally:
            await probe.close()

    def _check_host(self) -> None:
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the bubblewrap provider needs the server to run as root (to create cgroups and "
                "per-session tmpfs mounts and to switch to the unprivileged session uids)"
            )
        found = shutil.which(self.settings.bwrap_path)
        if not found:
            raise SandboxUnavailable(
                f"bubblewrap ({self.settings.bwrap_path}) not found; run scripts/setup_sandbox.sh "
                "or apt-get install bubblewrap"
            )
        self._bwrap = found
        python = self.settings.python
        if not os.access(python, os.X_OK):
            raise SandboxUnavailable(
                f"sandbox Python {python} not found; run scripts/setup_sandbox.sh or set SPINDLE_SANDBOX_PYTHON"
            )
        self._ro_binds = bwrap.python_mounts(python)
        for extra in filter(None, (p.strip() for p in self.settings.extra_ro_binds.split(","))):
            self._ro_binds.append(Path(extra).resolve())
        for bind in [*self._ro_binds, Path("/usr")]:
            for protected in self._protected:
                if protected == bind or bind in protected.parents:
                    raise SandboxUnavailable(f"{protected} (server data) is inside the sandbox mount {bind}")
        self._seccomp = compile_filter()
        self._cgroups.setup()
        self._work_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(self._work_dir, 0o711)
        self._lock_fd = os.open(self._work_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise SandboxUnavailable(
                f"another process uses {self._work_dir}; give each server its own SPINDLE_SANDBOX_WORK_DIR, "
                "SPINDLE_SANDBOX_CGROUP_PARENT and SPINDLE_SANDBOX_UID_BASE"
            ) from exc
        self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        """Remove what a previous, crashed server left: its processes, mounts, cgroups."""
        for name in self._cgroups.leftovers():
            cg = self._cgroups.existing(name)
            cg.kill_all()
            cg.remove()
        for entry in self._work_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                hostfs.unmount(str(entry))
                shutil.rmtree(entry, ignore_errors=True)

    async def shutdown(self) -> None:
        if self.zmq_context is not None:
            self.zmq_context.destroy(linger=0)
            self.zmq_context = None
        self._spawner.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- sessions -----------------------------------------------------------------------

    async def create_session(self) -> LocalSession:
        if self.zmq_context is None:
            raise SessionFailed("the provider is not started")
        if not self._free_slots:
            raise SessionFailed("no free session slot")
        slot = self._free_slots.pop(0)
        session = LocalSession(self, slot)
        try:
            await asyncio.to_thread(session.prepare_host)
            await session.launch()
        except BaseException as exc:
            await session.close()
            if isinstance(exc, SessionFailed | asyncio.CancelledError):
                raise
            raise SessionFailed(f"the session could not start: {exc}") from exc
        return session

    def release_slot(self, slot: int) -> None:
        if slot not in self._free_slots:
            self._free_slots.append(slot)

    def spawn(self, session: LocalSession) -> subprocess.Popen[bytes]:
        """Start the session's kernel from the spawner thread; blocks (call via to_thread)."""
        return self._spawner.submit(self._spawn, session).result()

    def _spawn(self, session: LocalSession) -> subprocess.Popen[bytes]:
        seccomp_fd = os.memfd_create("spindle-seccomp", 0)  # inheritable: bwrap reads it
        log_fd = os.open(session.root / "kernel.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(seccomp_fd, self._seccomp)
            os.lseek(seccomp_fd, 0, os.SEEK_SET)
            command = bwrap.bwrap_argv(
                bwrap=self._bwrap,
                python=self.settings.python,
                ro_binds=self._ro_binds,
                session_root=session.root,
                seccomp_fd=seccomp_fd,
                cpus=self.settings.cpus,
            )
            assert session.cgroup is not None
            argv = bwrap.launcher_argv(session.cgroup.procs_files, self.settings.memory_mb * 1024, command)
            return subprocess.Popen(
                argv,
                user=session.uid,
                group=session.uid,
                extra_groups=[],
                env={"PATH": "/usr/bin:/bin"},  # bwrap's own environ is visible as /proc/1/environ inside
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                pass_fds=(seccomp_fd,),
                start_new_session=True,  # a Ctrl-C on the server's terminal is not for the sandbox
            )
        finally:
            os.close(seccomp_fd)
            os.close(log_fd)

    @property
    def work_dir(self) -> Path:
        return self._work_dir

    @property
    def cgroups(self) -> CgroupV1:
        return self._cgroups

    @property
    def assets(self) -> dict[str, bytes]:
        return self._assets


class LocalSession(SandboxSession):
    """A session of the bubblewrap provider. Restarts its kernel in place (files kept)."""

    def __init__(self, provider: BubblewrapProvider, slot: int) -> None:
        self._provider = provider
        self._settings = provider.settings
        self.slot = slot
        self.uid = self._settings.uid_base + slot
        self.id = f"s{slot}-{secrets.token_hex(4)}"
        self.root = provider.work_dir / self.id
        self._cgroup: SessionCgroup | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: KernelChannel | None = None
        self._closed = False

    # -- start / stop -------------------------------------------------------------------

    def prepare_host(self) -> None:
        """Blocking: the tmpfs, its directories and the cgroups."""
        self.root.mkdir(mode=0o711)
        hostfs.mount_tmpfs(str(self.root), size_bytes=self._settings.disk_mb * _MIB, uid=0, mode=0o711)
        for sub in ("data", "tmp", "ipc"):
            path = self.root / sub
            path.mkdir(mode=0o700)
            os.chown(path, self.uid, self.uid)
        os.chmod(self.root / "data", 0o755)
        etc = self.root / "etc"
        etc.mkdir(mode=0o755)
        for name, text in bwrap.etc_files().items():
            (etc / name).write_text(text)
            os.chmod(etc / name, 0o644)
        mpl = self.root / "tmp" / ".matplotlib"
        mpl.mkdir(mode=0o700)
        os.chown(mpl, self.uid, self.uid)
        for name, data in self._provider.assets.items():
            hostfs.write_new_file(str(mpl), name, data, self.uid)
        self._cgroup = self._provider.cgroups.create(
            self.id,
            memory_bytes=self._settings.memory_mb * _MIB,
            pids_max=self._settings.pids_max,
            cpus=self._settings.cpus,
            owner_uid=self.uid,
        )

    def _write_connection(self) -> dict[str, Any]:
        """Blocking: a fresh key and sockets; returns the server-side connection info."""
        ipc = self.root / "ipc"
        for entry in ipc.iterdir():  # stale sockets of a previous kernel
            entry.unlink()
        key = secrets.token_hex(32)
        info: dict[str, Any] = {"transport": "ipc", "key": key, "signature_scheme": "hmac-sha256", **_PORTS}
        inside = {**info, "ip": f"{bwrap.IPC_DIR}/k", "kernel_name": ""}
        path = ipc / "connection.json"
        path.write_text(json.dumps(inside))
        os.chown(path, self.uid, self.uid)
        return {**info, "ip": str(ipc / "k")}

    async def launch(self) -> None:
        connection = await asyncio.to_thread(self._write_connection)
        self._proc = await asyncio.to_thread(self._provider.spawn, self)
        assert self._provider.zmq_context is not None
        self._channel = KernelChannel(connection, self._provider.zmq_context)
        try:
            await self._channel.wait_ready(self._settings.start_timeout_s, self.alive)
            modules = [m.strip() for m in self._settings.preload.split(",") if m.strip()]
            if modules:
                reply = await self._channel.run_silent(_preload_code(modules), self._settings.start_timeout_s)
                if reply.get("status") != "ok":
                    log.warning("sandbox preload failed: %s", reply.get("evalue"))
        except KernelNotReady as exc:
            raise SessionFailed(f"{exc}; kernel log: {self._log_tail()}") from exc

    @property
    def cgroup(self) -> SessionCgroup | None:
        return self._cgroup

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "kernel.log").read_text(errors="replace")[-2000:]
        return ""

    def _kill(self) -> None:
        """Blocking: kill every process of the session and reap bwrap."""
        if self._cgroup is not None:
            self._cgroup.kill_all()
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)

    async def restart(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        await asyncio.to_thread(self._kill)
        await self.launch()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        try:
            await asyncio.to_thread(self._teardown)
        except Exception:  # close never raises; a leftover is cleaned at next start
            log.exception("sandbox session %s: teardown failed", self.id)
        self._provider.release_slot(self.slot)

    def _teardown(self) -> None:
        self._kill()
        if hostfs.is_mount(str(self.root)):
            hostfs.unmount(str(self.root))
        with contextlib.suppress(OSError):
            self.root.rmdir()
        if self._cgroup is not None:
            self._cgroup.remove()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- work ---------------------------------------------------------------------------

    async def execute(self, code: str, *, timeout: float, on_output: OutputCallback | None = None) -> ExecutionResult:
        prefix_note = None
        if not self.alive() or self._channel is None:
            await self.restart()
            prefix_note = "the Python process had stopped and was restarted before this call (variables were lost)"
        assert self._channel is not None and self._cgroup is not None
        oom_before = self._cgroup.oom_kills()
        pids_before = self._cgroup.pids_limit_hits()
        result, must_restart = await self._channel.execute(
            code, timeout=timeout, grace=self._settings.interrupt_grace_s, alive=self.alive, on_output=on_output
        )
        notes = [n for n in (prefix_note, result.note) if n]
        if self._cgroup.oom_kills() > oom_before:
            notes.append(f"a process was killed for exceeding the {self._settings.memory_mb} MiB memory limit")
        if self._cgroup.pids_limit_hits() > pids_before:
            notes.append(f"process creation failed: the {self._settings.pids_max} processes/threads limit was reached")
        if must_restart:
            await self.restart()
            notes.append("the session was restarted: variables and imports are lost, files in /mnt/data are kept")
        result.note = "; ".join(notes) or None
        return result

    async def put_file(self, name: str, data: bytes) -> str:
        return await asyncio.to_thread(hostfs.write_new_file, str(self.root / "data"), name, data, self.uid)

    async def list_files(self) -> list[SandboxFile]:
        found = await asyncio.to_thread(hostfs.snapshot, str(self.root / "data"))
        return [SandboxFile(path, st.size, st.mtime_ns) for path, st in sorted(found.items())]

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        return await asyncio.to_thread(hostfs.read_file, str(self.root / "data"), path, max_bytes)

    async def memory_bytes(self) -> int | None:
        if self._cgroup is None:
            return None
        return await asyncio.to_thread(self._cgroup.memory_usage)
