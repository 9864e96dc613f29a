"""The local provider: ipykernels isolated by bubblewrap, limited by cgroups and a tmpfs.

One session = one host uid (``uids``), one size-limited tmpfs holding its /mnt/data, /tmp and
kernel sockets, its limits (``limits``: cgroup v1, cgroup v2 or rlimits), one bubblewrap
process tree running ipykernel (``local_session``). The server talks to the kernel over Unix
sockets in the tmpfs.

As root, every session gets its own uid and tmpfs and the code never runs as root. As an
ordinary user (``rootless``), bubblewrap uses an unprivileged user namespace, every session
runs as the server's uid, session directories are plain directories and the limits come
from a delegated cgroup v2 subtree or rlimits; the start-up line names what is missing.
``start`` checks all of it and then runs a probe session end to end, so a host that cannot
build the sandbox is reported with the reason and code never runs.

Each server process is an *instance* with its own directory under ``work_dir`` and its own
cgroups; what a crashed instance left behind is removed by the next one that starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import select
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import zmq.asyncio

from spindle.sandbox import bwrap, hostfs
from spindle.sandbox.errors import SandboxUnavailable, SessionFailed
from spindle.sandbox.kernel import configure_context
from spindle.sandbox.limits import (
    Limits,
    LimitsBackend,
    Rlimits,
    RlimitsOnly,
    SessionLimits,
    describe,
    select_backend,
)
from spindle.sandbox.local_session import LocalSession
from spindle.sandbox.provider import SandboxProvider, SandboxSession
from spindle.sandbox.seccomp import compile_filter
from spindle.sandbox.settings import SandboxSettings
from spindle.sandbox.uids import LOCK_DIR, SharedUid, UidAllocator
from spindle.sandbox.zygote import ForkedKernel, Zygote, ZygoteError, sandbox_namespaces

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_UIDS_DIR = "uids"
_SOCKETS = tuple(f"k-{port}" for port in range(1, 6))  # the kernel's five IPC sockets


class _SessionLimitsFactory:
    """What a session calls to get its limits (``provider.cgroups.create``)."""

    def __init__(self, backend: LimitsBackend, limits: Limits) -> None:
        self.backend = backend
        self.limits = limits

    def create(self, name: str, **_: object) -> SessionLimits:
        # The values come from the settings, identical for every session.
        return self.backend.create(name, self.limits)

    def instances(self) -> list[str]:
        return self.backend.instances()

    def remove_instance(self, instance: str) -> None:
        self.backend.remove_instance(instance)


class BubblewrapProvider(SandboxProvider):
    name = "bubblewrap"

    def __init__(
        self,
        settings: SandboxSettings,
        protected_paths: list[Path] | None = None,
        uid_lock_dir: Path = LOCK_DIR,
    ) -> None:
        self.settings = settings
        self._protected = [p.resolve() for p in (protected_paths or [])]
        # Random: the name is part of host paths, and must not give away the server's PID.
        self.instance = "i" + secrets.token_hex(6)
        self.root = os.geteuid() == 0
        self.work_dir = settings.work_dir if self.root else rootless_work_dir(settings)
        self.instance_dir = self.work_dir / self.instance
        self.limits = Limits(
            memory_bytes=settings.memory_mb * _MIB,
            pids_max=settings.pids_max,
            cpus=settings.cpus,
            disk_bytes=settings.disk_mb * _MIB,
            cpu_seconds=max(1, int(settings.cpus * settings.session_lifetime_s)),
        )
        self.cgroups: _SessionLimitsFactory | None = None  # set up by start()
        self.limits_line = ""
        self.uids: UidAllocator | SharedUid = (
            UidAllocator(uid_lock_dir, settings.uid_base) if self.root else SharedUid(os.getuid())
        )
        self._spawner = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sandbox-spawn"
        )
        self._lock_fd: int | None = None
        self._ro_binds: list[Path] = []
        self._bwrap = ""
        self._seccomp = b""
        # matplotlib's font cache, built by the probe and copied into each session (~1 s saved).
        self.assets: dict[str, bytes] = {}
        self.zmq_context: zmq.asyncio.Context | None = None
        self._spare: LocalSession | None = None
        self._zygote: Zygote | None = None
        self._zygote_lock = threading.Lock()

    # -- provider lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._check_host)
        self.zmq_context = zmq.asyncio.Context()
        configure_context(self.zmq_context, self.settings.max_output_file_mb * _MIB)
        # The zygote forks as root into each session's namespaces and uid; rootless servers
        # can't, and start a fresh interpreter per session. Without cgroups a session's
        # processes are found as the launcher's descendants, which a forked kernel is not: the
        # rlimits backend starts fresh interpreters too.
        assert self.cgroups is not None
        if self.settings.fast_start and self.root and not isinstance(self.cgroups.backend, RlimitsOnly):
            await asyncio.to_thread(self._start_zygote)
        try:
            first = await self._probe_session()
        except BaseException:
            # A server that cannot run code must not leave its zygote behind.
            await asyncio.to_thread(self._stop_zygote)
            raise
        self._spare = first  # the probe becomes the first session handed out

    async def _probe_session(self) -> LocalSession:
        """The first session: proves code can run here (with the zygote if there is one, else
        or on its failure a fresh interpreter) and as the session's uid only."""
        try:
            first = await self.create_session()  # ready means: started, connected, preload ran
        except SessionFailed as exc:
            if self._zygote is None:
                raise SandboxUnavailable(f"a probe session failed to start: {exc}") from exc
            # Never a reason to run no code at all: fall back to the fresh-interpreter start.
            log.warning("sandbox: a session forked from the zygote failed (%s); fast starts are off", exc)
            await asyncio.to_thread(self._stop_zygote)
            try:
                first = await self.create_session()
            except SessionFailed as exc2:
                raise SandboxUnavailable(f"a probe session failed to start: {exc2}") from exc2
        uids = await asyncio.to_thread(first.host_uids)
        if uids != {first.uid}:
            await first.close()
            raise SandboxUnavailable(f"sandbox processes run as host uids {uids}, expected only {first.uid}")
        mpl = str(first.root / "tmp" / ".matplotlib")
        for name in await asyncio.to_thread(hostfs.snapshot, mpl):
            if name.endswith(".json"):
                self.assets[name] = await asyncio.to_thread(hostfs.read_file, mpl, name, 16 * _MIB)
        return first

    def _start_zygote(self) -> None:
        self._zygote = self._new_zygote()

    def _new_zygote(self) -> Zygote | None:
        modules = [m.strip() for m in self.settings.preload.split(",") if m.strip()]
        env = bwrap.sandbox_env(self.settings.python, self.settings.cpus)
        zygote = Zygote(self.settings.python, env, modules, self._seccomp)
        try:
            problems = zygote.start(self.settings.start_timeout_s)
        except (OSError, ZygoteError) as exc:
            log.warning("sandbox: the zygote did not start (%s); sessions start a fresh interpreter", exc)
            zygote.stop()
            return None
        for problem in problems:
            log.warning("sandbox zygote preload %s", problem)
        return zygote

    def _stop_zygote(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.stop()

    @property
    def fast_start(self) -> bool:
        """Whether sessions are forked from the zygote."""
        return self._zygote is not None

    def _check_host(self) -> None:
        for tool in ("/usr/bin/prlimit", "/usr/bin/setpriv"):
            if not os.access(tool, os.X_OK):
                raise SandboxUnavailable(f"{tool} not found; apt-get install util-linux")
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
        if len(str(self.instance_dir)) > 60:  # Unix socket paths are limited to 107 bytes
            raise SandboxUnavailable(f"SPINDLE_SANDBOX_WORK_DIR {self.settings.work_dir} is too long")
        self._seccomp = compile_filter()
        work_dir = self.work_dir
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o711 if self.root else 0o700)
        if work_dir.is_symlink() or work_dir.stat().st_uid != os.geteuid():
            raise SandboxUnavailable(f"the sandbox work dir {work_dir} is not this user's directory")
        os.chmod(work_dir, 0o711 if self.root else 0o700)
        self.uids.setup()
        # Claim the instance (directory + held lock) before creating its cgroups, so another
        # server cleaning up never mistakes this one for a crashed instance.
        self.instance_dir.mkdir(mode=0o711)
        self._lock_fd = os.open(self.instance_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        backend, skipped = select_backend(
            self.settings.limits,
            parent=self.settings.cgroup_parent,
            instance=self.instance,
            instance_dir=self.instance_dir,
            total_memory=self.settings.total_memory_bytes(),
            v2_path=self.settings.cgroup_v2_path,
            root=self.root,
            server_procs=_processes_of_uid(os.getuid()),
            max_sessions=self.settings.max_sessions,
        )
        self.cgroups = _SessionLimitsFactory(backend, self.limits)
        self.limits_line = describe(backend, self.limits, root=self.root, disk_limited=self.root, skipped=skipped)
        # One line at start saying which limits hold; a warning when some do not.
        log.log(logging.WARNING if "NOT enforced" in self.limits_line else logging.INFO, "%s", self.limits_line)
        self._clean_stale_instances()

    def _clean_stale_instances(self) -> None:
        """Remove what crashed servers left: processes, mounts, directories, cgroups.

        An instance is alive while its process holds the flock on its ``.lock``."""
        work_dir = self.work_dir
        assert self.cgroups is not None
        stale: set[str] = set()
        for entry in work_dir.iterdir():
            if entry.name == _UIDS_DIR or not entry.is_dir() or entry.is_symlink():
                continue
            try:
                fd = os.open(entry / ".lock", os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                # No lock yet: a server that is just starting, unless the directory is old.
                if time.time() - entry.stat().st_mtime > 60:
                    stale.add(entry.name)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stale.add(entry.name)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        alive = {e.name for e in work_dir.iterdir() if e.is_dir()} - stale
        stale |= {name for name in self.cgroups.instances() if name not in alive and name != self.instance}
        for name in stale:
            log.info("sandbox: removing leftovers of stopped instance %s", name)
            self.cgroups.remove_instance(name)
            self._remove_instance_dir(work_dir / name)

    def _remove_instance_dir(self, path: Path) -> None:
        if not path.exists():
            return
        if self.root:  # rootless sessions have no mounts of their own
            for session_dir in path.iterdir():
                if session_dir.is_dir() and not session_dir.is_symlink():
                    hostfs.unmount(str(session_dir))
        shutil.rmtree(path, ignore_errors=True)

    async def shutdown(self) -> None:
        if self._spare is not None:
            await self._spare.close()
            self._spare = None
        if self.zmq_context is not None:
            self.zmq_context.destroy(linger=0)
            self.zmq_context = None
        self._spawner.shutdown(wait=True)
        await asyncio.to_thread(self._stop_zygote)
        await asyncio.to_thread(self._remove_instance)

    def _remove_instance(self) -> None:
        if self.cgroups is not None:
            self.cgroups.remove_instance(self.instance)
        self._remove_instance_dir(self.instance_dir)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- sessions -----------------------------------------------------------------------

    async def create_session(self) -> LocalSession:
        if self.zmq_context is None:
            raise SessionFailed("the provider is not started")
        spare, self._spare = self._spare, None
        if spare is not None:
            if spare.alive():
                return spare
            await spare.close()
        uid = await asyncio.to_thread(self.uids.acquire)
        session = LocalSession(self, uid)
        try:
            await asyncio.to_thread(session.prepare_host)
            await session.launch()
        except BaseException as exc:
            await session.close()
            if isinstance(exc, SessionFailed | asyncio.CancelledError):
                raise
            raise SessionFailed(f"the session could not start: {exc}") from exc
        return session

    def spawn(self, session: LocalSession) -> tuple[subprocess.Popen[bytes], ForkedKernel | None]:
        """Start the session's kernel from the spawner thread; blocks (call via to_thread).
        Returns bubblewrap and, for a kernel forked from the zygote, that kernel.

        Only bubblewrap's start is serialised on the spawner thread; waiting for the sandbox
        to be built happens here, so that a burst of sessions builds its sandboxes in parallel."""
        proc, ready, argv = self._spawner.submit(self._spawn, session).result()
        if ready == -1:
            return proc, None
        try:
            return proc, self._fork_kernel(session, proc, ready, argv)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            raise
        finally:
            os.close(ready)

    def _spawn(self, session: LocalSession) -> tuple[subprocess.Popen[bytes], int, list[str]]:
        """Start bubblewrap; with the zygote, also return the read end of its ready pipe and
        the kernel's arguments (else -1 and [])."""
        seccomp_fd = os.memfd_create("spindle-seccomp", 0)  # inheritable: bwrap reads it
        # bwrap's argv is the sandbox's /proc/1/cmdline, so its options (host paths) are read
        # from a pipe instead: read to the end by bwrap, nothing is left for the sandbox.
        args_read, args_write = os.pipe()
        log_fd = session.log_fd
        try:
            os.write(seccomp_fd, self._seccomp)
            os.lseek(seccomp_fd, 0, os.SEEK_SET)
            options, command = bwrap.split_options(
                bwrap.bwrap_argv(
                    bwrap=self._bwrap,
                    python=self.settings.python,
                    ro_binds=self._ro_binds,
                    session_root=session.root,
                    seccomp_fd=seccomp_fd,
                    cpus=self.settings.cpus,
                )
            )
            zygote = self._zygote
            kernel_argv = command[4:]  # after "--", python, "-m", "ipykernel_launcher"
            if zygote is not None:
                # bubblewrap builds the sandbox as always; its command tells us so and waits.
                command = ["--", "/bin/sh", "-c", "echo >&0; exec sleep infinity </dev/null"]
            payload = b"".join(arg.encode() + b"\0" for arg in options)
            if len(payload) > 60000:  # a pipe holds 64 KiB: more would block this write
                raise SessionFailed(
                    "the sandbox's command line is too long (SPINDLE_SANDBOX_EXTRA_RO_BINDS?)"
                )
            os.write(args_write, payload)
            os.close(args_write)
            args_write = -1
            assert session.cgroup is not None
            argv = bwrap.launcher_argv(
                session.cgroup.join_files,
                self._session_rlimits(session).prlimit_args(),
                [self._bwrap, "--args", str(args_read), *command],
                # As root the launcher joins the cgroups first and then drops to the session uid.
                run_as=session.uid if self.root else None,
            )
            ready_read, ready_write = os.pipe() if zygote is not None else (-1, -1)
            try:
                # The launcher joins the cgroups and drops to the session uid itself (setpriv).
                proc = subprocess.Popen(
                    argv,
                    env={"PATH": "/usr/bin:/bin"},  # bwrap's own environ is visible as /proc/1/environ inside
                    stdin=subprocess.DEVNULL if zygote is None else ready_write,
                    stdout=log_fd,
                    stderr=log_fd,
                    pass_fds=(seccomp_fd, args_read),
                    start_new_session=True,  # a Ctrl-C on the server's terminal is not for the sandbox
                    cwd="/",
                )
            except BaseException:
                if ready_read != -1:
                    os.close(ready_read)
                raise
            finally:
                if ready_write != -1:
                    os.close(ready_write)
            return proc, ready_read, kernel_argv if zygote is not None else []
        finally:
            os.close(seccomp_fd)
            os.close(args_read)
            if args_write != -1:
                os.close(args_write)

    def _session_limits(self, session: LocalSession) -> Limits:
        """The settings' limits, with the session's own memory limit if it has one."""
        override = session.cgroup.memory_override if session.cgroup is not None else None
        return self.limits if override is None else dataclasses.replace(self.limits, memory_bytes=override)

    def _session_rlimits(self, session: LocalSession) -> Rlimits:
        """The per-process limits of a session: set by the launcher for a fresh interpreter and
        by the zygote's child for a forked one, so both kinds of session get the same (also
        after a restart of the kernel, with the session's own memory limit)."""
        assert self.cgroups is not None
        rlimits = self.cgroups.backend.rlimits(self._session_limits(session))
        if not self.root:  # no tmpfs per session: at least each file is bounded
            rlimits.values["fsize"] = self.limits.disk_bytes
        return rlimits

    def _fork_kernel(
        self, session: LocalSession, proc: subprocess.Popen[bytes], ready: int, argv: list[str]
    ) -> ForkedKernel:
        """Wait until bubblewrap has built the sandbox, then have the zygote start the kernel in it."""
        timeout = self.settings.start_timeout_s
        readable, _, _ = select.select([ready], [], [], timeout)
        if not readable or not os.read(ready, 1):
            raise SessionFailed(f"the sandbox did not start; log: {session.log_tail()}")
        waiter, ns_fds = sandbox_namespaces(proc.pid)
        rlimits = {f"RLIMIT_{name.upper()}": (value, value) for name, value in self._session_rlimits(session).values.items()}
        try:
            assert session.cgroup is not None
            with self._zygote_lock:  # one request at a time on its socket; each takes milliseconds
                zygote = self._zygote
                if zygote is not None and not zygote.alive():
                    log.warning("sandbox: the zygote exited (%s); restarting it", zygote.log_tail()[-300:])
                    # The dead one stays in place until its successor is up: sandboxes being
                    # built meanwhile still wait for a fork (here, after this lock) instead of
                    # falling back to a fresh interpreter. On failure: fresh interpreters.
                    self._zygote = self._new_zygote()
                    zygote.stop()
                    zygote = self._zygote
                if zygote is None:
                    raise ZygoteError("the zygote is gone and could not be restarted")
                kernel = zygote.fork_kernel(
                    log_fd=session.log_fd,
                    procs_files=session.cgroup.join_files,
                    ns_fds=ns_fds,
                    rlimits=rlimits,  # what the launcher sets for a fresh session
                    cwd=bwrap.DATA_DIR,
                    argv=argv,
                    timeout=timeout,
                )
            return dataclasses.replace(kernel, waiter=waiter)
        except ZygoteError as exc:
            raise SessionFailed(str(exc)) from exc
        finally:
            for fd in ns_fds:
                os.close(fd)

    async def limit_memory(self, session: SandboxSession, memory_bytes: int) -> int:
        """Give one session a memory limit of its own (a container's ``memory_limit``), never
        above the settings' ``memory_mb``; returns the limit the session has now.

        The cgroup's limit covers the whole session at once. RLIMIT_DATA (and RLIMIT_AS with
        the rlimits backend) is per process: the server may not change another process's
        limits without CAP_SYS_RESOURCE (which containers usually lack), so the kernel lowers
        its own, which needs no privilege and cannot be undone from inside; the code's
        children inherit it, and a kernel started later in this session (a restart) gets it
        from the launcher. Raising it restarts the kernel (its state is lost)."""
        if not isinstance(session, LocalSession) or session.cgroup is None:
            raise SessionFailed("the session does not belong to this provider")
        applied = min(memory_bytes, self.limits.memory_bytes)
        current = self._session_limits(session).memory_bytes
        if applied == current:
            return applied
        await asyncio.to_thread(session.cgroup.set_memory, applied)
        if applied > current:
            await session.restart()
            return applied
        values = {k: v for k, v in self._session_rlimits(session).values.items() if k in ("data", "as")}
        code = "import resource as _r\n" + "".join(
            f"_r.setrlimit(_r.RLIMIT_{name.upper()}, ({value}, {value}))\n" for name, value in values.items()
        ) + "del _r\n"
        result = await session.execute(code, timeout=self.settings.start_timeout_s)
        if result.status != "ok":
            # The override is recorded already (the next lease sees it as applied): a kernel
            # that did not lower its own limit is replaced by one the launcher starts with it.
            log.warning("sandbox: the session's kernel did not lower its memory limit (%s); restarting it",
                        result.status)
            await session.restart()
        return applied

    def session_finished(self, session: LocalSession) -> None:
        """Called by a session once torn down: its uid may be reused."""
        with contextlib.suppress(Exception):
            self.uids.release(session.uid)

    # -- session directories (root: a tmpfs per session; rootless: plain directories) ----

    @property
    def file_owner_uid(self) -> int:
        """Owner of the server's own files in a session directory (root's when we are root)."""
        return 0 if self.root else os.getuid()

    def mount_session_root(self, root: Path) -> None:
        if self.root:
            hostfs.mount_tmpfs(str(root), size_bytes=self.settings.disk_mb * _MIB, uid=0, mode=0o711)

    def remove_session_root(self, root: Path) -> None:
        if hostfs.is_mount(str(root)):
            hostfs.unmount(str(root))
        if self.root:
            with contextlib.suppress(OSError):
                root.rmdir()
        else:
            shutil.rmtree(root, ignore_errors=True)  # never follows links

    def seal_ipc(self, ipc: Path) -> None:
        """Blocking: from now on the server connects only to sockets the code cannot swap.

        As root: ``ipc`` becomes root's and read-only for the session uid. Rootless, the
        session runs as our own uid and could change any directory it can write, so ``ipc``
        moves aside (the sandbox's bind mount follows it) and a fresh private ``ipc`` gets
        hard links to the kernel's sockets; ``link`` never follows a symlink and each new
        entry is checked to be a socket, so a planted link or file fails the start."""
        if self.root:
            fd = os.open(ipc, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchown(fd, 0, 0)
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
            return
        shared = ipc.with_name("ipc.sandbox")
        if os.path.lexists(shared):
            shutil.rmtree(shared) if shared.is_dir() and not shared.is_symlink() else shared.unlink()
        os.rename(ipc, shared)
        os.mkdir(ipc, 0o700)
        for name in _SOCKETS:
            os.link(shared / name, ipc / name, follow_symlinks=False)
            if not stat.S_ISSOCK(os.lstat(ipc / name).st_mode):
                raise SessionFailed(f"the kernel's socket {name} was replaced by something else")


def rootless_work_dir(settings: SandboxSettings) -> Path:
    """Rootless, the default work dir (under /run) is not writable: use the user's runtime dir."""
    default = SandboxSettings.model_fields["work_dir"].default
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if settings.work_dir == default and runtime:
        return Path(runtime) / "spindle-sandbox"
    return settings.work_dir


def _processes_of_uid(uid: int) -> int:
    """Processes and threads the uid runs now (RLIMIT_NPROC counts them all)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{entry}")
                if st.st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
    return count
