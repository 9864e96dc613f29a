"""A session of the bubblewrap provider: its host directories, its kernel, its limits' reports.

The session's tmpfs (mounted on the host at ``<instance dir>/<session id>``) holds ``data``
(/mnt/data), ``tmp`` (/tmp), ``shm`` (/dev/shm), ``ipc`` (/run/spindle: sockets and connection
file) and ``etc`` (generated passwd/group/hosts). The kernel can be killed and relaunched in
place after a timeout or crash: variables are lost, the tmpfs and so the files are kept.

The server (root) connects to the kernel's sockets by path, so ``ipc`` must never hold
anything the code put there: it is made afresh for each kernel, writable by the session uid
only until the kernel has bound its sockets and answered, then handed to root (read-only for
the sandbox) before any user code runs. A symlink or directory the code tries to plant there
fails with EACCES; the server never follows a path the sandbox can write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

import zmq

from spindle.sandbox import bwrap, hostfs
from spindle.sandbox.cgroups import SessionCgroup
from spindle.sandbox.errors import SessionFailed
from spindle.sandbox.kernel import KernelChannel, KernelNotReady
from spindle.sandbox.provider import ExecutionResult, OutputCallback, SandboxFile, SandboxSession
from spindle.sandbox.zygote import ForkedKernel, pidfd_exited

if TYPE_CHECKING:
    from spindle.sandbox.local import BubblewrapProvider

log = logging.getLogger(__name__)

_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
_MIB = 1024 * 1024
_RESTARTED = "the session was restarted: variables and imports are lost, files in /mnt/data are kept"


def _preload_code(modules: list[str], warm_up: bool = True) -> str:
    # Runs silently at start; imports land in sys.modules only, the user namespace stays empty.
    # Importing pyplot once the shell exists also wires the inline backend's end-of-cell hook,
    # which turns figures left open into image/png outputs. Rendering one throwaway figure and
    # one DataFrame loads fonts and formatters now rather than in the user's first call.
    return (
        "def __spindle_preload(names):\n"
        "    import importlib, io, sys\n"
        "    for name in names:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except Exception as exc:\n"
        "            print(f'preload {name}: {exc!r}')\n"
        "    try:\n"
        "        inline = sys.modules.get('matplotlib_inline.backend_inline')\n"
        "        ip = get_ipython()\n"
        "        if inline is not None and inline.flush_figures not in ip.events.callbacks['post_execute']:\n"
        "            ip.run_line_magic('matplotlib', 'inline')  # pyplot came from the zygote, before the shell\n"
        f"        if not {warm_up!r}:\n"
        "            return  # forked from the zygote, which rendered these already\n"
        "        if 'matplotlib.pyplot' in sys.modules:\n"
        "            plt = sys.modules['matplotlib.pyplot']\n"
        "            fig = plt.figure()\n"
        "            fig.gca().plot([0, 1])\n"
        "            fig.savefig(io.BytesIO(), format='png')\n"
        "            plt.close(fig)\n"
        "        if 'pandas' in sys.modules:\n"
        "            repr(sys.modules['pandas'].DataFrame({'a': [1]}))\n"
        "    except Exception:\n"
        "        pass\n"
        f"__spindle_preload({modules!r})\n"
        "del __spindle_preload\n"
    )


class LocalSession(SandboxSession):
    def __init__(self, provider: BubblewrapProvider, uid: int) -> None:
        self._provider = provider
        self._settings = provider.settings
        self.uid = uid
        # Random, not the uid slot: the id is in host paths and must not count sessions.
        self.id = "s" + secrets.token_hex(6)
        self.root = provider.instance_dir / self.id
        self.cgroup: SessionCgroup | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # Set when the kernel was forked from the zygote: then it is not bwrap's descendant.
        self._kernel: ForkedKernel | None = None
        self._channel: KernelChannel | None = None
        self._connection: dict[str, Any] = {}
        self._closed = False
        # The kernel's stdout/stderr. A memfd, not a file in the session dir: the sandbox can
        # readlink its fds, and a file's would be a host path. Charged to the session's writer.
        self._log_fd = os.memfd_create("kernel-log", os.MFD_CLOEXEC)

    # -- start / stop -------------------------------------------------------------------

    def prepare_host(self) -> None:
        """Blocking: the tmpfs, its directories and the cgroups."""
        self.root.mkdir(mode=0o711)
        self._provider.mount_session_root(self.root)
        for sub in ("data", "tmp", "shm"):
            path = self.root / sub
            path.mkdir(mode=0o700)
            os.chown(path, self.uid, self.uid)
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
        assert self._provider.cgroups is not None
        self.cgroup = self._provider.cgroups.create(
            self.id,
            memory_bytes=self._settings.memory_mb * _MIB,
            pids_max=self._settings.pids_max,
            cpus=self._settings.cpus,
            owner_uid=self.uid,
        )

    def _write_connection(self) -> dict[str, Any]:
        """Blocking: a fresh ``ipc`` directory, key and socket paths; returns the server-side
        connection info. Called with no process of the session alive."""
        ipc = self.root / "ipc"
        # The session root is root's (0711): only we can replace ``ipc`` itself. Whatever the
        # last kernel left in it goes with it (rmtree never follows links).
        if os.path.lexists(ipc):
            if os.path.isdir(ipc) and not os.path.islink(ipc):
                shutil.rmtree(ipc)
            else:
                os.unlink(ipc)
        os.mkdir(ipc, 0o700)
        os.chown(ipc, self.uid, self.uid)  # the kernel creates its sockets here
        key = secrets.token_hex(32)
        info: dict[str, Any] = {"transport": "ipc", "key": key, "signature_scheme": "hmac-sha256", **_PORTS}
        # The kernel binds inside its mount namespace; we connect to the same sockets from the host.
        inside = {**info, "ip": f"{bwrap.IPC_DIR}/k", "kernel_name": ""}
        # Root's and read-only for the kernel, which only reads it.
        owner = self._provider.file_owner_uid
        hostfs.write_new_file(str(ipc), "connection.json", json.dumps(inside).encode(), owner, mode=0o644)
        return {**info, "ip": str(ipc / "k")}

    def _seal_ipc(self) -> None:
        """Blocking: make ``ipc`` root's now that the kernel's sockets exist, so the code can
        neither replace them nor add anything the server would later connect to."""
        self._provider.seal_ipc(self.root / "ipc")

    async def launch(self) -> None:
        connection = self._connection = await asyncio.to_thread(self._write_connection)
        spawning = asyncio.ensure_future(asyncio.to_thread(self._provider.spawn, self))
        try:
            self._proc, self._kernel = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # The process starts anyway: keep it so that close() kills and reaps it.
            with contextlib.suppress(Exception):
                self._proc, self._kernel = await spawning
            raise
        assert self._provider.zmq_context is not None
        self._channel = KernelChannel(
            connection, self._provider.zmq_context, max_image_bytes=self._settings.max_output_file_mb * _MIB
        )
        try:
            await self._channel.wait_ready(self._settings.start_timeout_s, self.alive)
            await asyncio.to_thread(self._seal_ipc)
            modules = [m.strip() for m in self._settings.preload.split(",") if m.strip()]
            if modules:
                code = _preload_code(modules, warm_up=self._kernel is None)
                reply = await self._channel.run_silent(code, self._settings.start_timeout_s)
                if reply.get("status") != "ok":
                    log.warning("sandbox preload failed: %s", reply.get("evalue"))
        except KernelNotReady as exc:
            raise SessionFailed(f"{exc}; kernel log: {self._log_tail()}") from exc
        self._channel.start_draining()

    @property
    def log_fd(self) -> int:
        return self._log_fd

    async def _reconnect(self) -> None:
        """A new channel to the running kernel (state kept), after libzmq closed a connection
        because the kernel sent an oversized message. ``ipc`` is sealed: the paths are ours."""
        assert self._provider.zmq_context is not None
        if self._channel is not None:
            self._channel.close()
        self._channel = KernelChannel(
            self._connection,
            self._provider.zmq_context,
            max_image_bytes=self._settings.max_output_file_mb * _MIB,
        )
        try:
            await self._channel.wait_ready(self._settings.start_timeout_s, self.alive)
        except KernelNotReady:
            await self.restart()
            return
        self._channel.start_draining()

    def log_tail(self) -> str:
        return self._log_tail()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            size = os.fstat(self._log_fd).st_size
            return os.pread(self._log_fd, 2000, max(0, size - 2000)).decode(errors="replace")
        return ""

    def _kill(self) -> None:
        """Blocking: kill every process of the session and reap bwrap."""
        if self.cgroup is not None:
            self.cgroup.kill_all()
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        if self._kernel is not None:
            os.close(self._kernel.pidfd)
            self._kernel = None

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
        except Exception:  # close never raises; the next instance to start cleans leftovers
            log.exception("sandbox session %s: teardown failed", self.id)
        self._provider.session_finished(self)

    def _teardown(self) -> None:
        self._kill()
        self._provider.remove_session_root(self.root)
        if self.cgroup is not None:
            self.cgroup.remove()
        with contextlib.suppress(OSError):
            os.close(self._log_fd)

    def _kill_strays(self) -> int:
        """Blocking: SIGKILL every process of the session except bwrap and the kernel."""
        killed = 0
        for _ in range(3):  # a process may fork while we kill its siblings
            strays = self._strays()
            if not strays:
                break
            for pid in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed += len(strays)
            time.sleep(0.05)
        return killed

    def _strays(self) -> set[int]:
        if self._proc is None or self.cgroup is None:
            return set()
        parents: dict[int, int] = {}
        for pid in self.cgroup.pids():
            with (
                contextlib.suppress(OSError, ValueError, IndexError),
                open(f"/proc/{pid}/stat", encoding="ascii") as fh,
            ):
                # The command name may contain spaces: the fields we want follow its ")".
                parents[pid] = int(fh.read().rsplit(")", 1)[1].split()[1])
        outer = self._proc.pid
        inits = {pid for pid, ppid in parents.items() if ppid == outer}
        children = [pid for pid, ppid in parents.items() if ppid in inits]
        if self._kernel is not None:  # forked from the zygote: bwrap's command only waits
            keep = {outer, *inits, self._kernel.pid, self._kernel.waiter}
        else:
            keep = {outer, *inits, *([min(children)] if children else [])}
        return set(parents) - keep

    def host_uids(self) -> set[int]:
        """Blocking: the real host uids of the session's processes (for the start-up check)."""
        uids: set[int] = set()
        for pid in self.cgroup.pids() if self.cgroup else []:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        uids.update(int(x) for x in line.split()[1:])
        return uids

    def alive(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            return False
        return self._kernel is None or not pidfd_exited(self._kernel.pidfd)

    # -- work ---------------------------------------------------------------------------

    async def execute(
        self, code: str, *, timeout: float, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        if self._closed:
            return ExecutionResult("restarted", note="the session was closed")
        notes: list[str] = []
        if not self.alive() or self._channel is None:
            await self.restart()
            notes.append(
                "the Python process had stopped and was restarted before this call (variables were lost)"
            )
        assert self._channel is not None and self.cgroup is not None
        if self._channel.broken:  # reset between calls (a background thread's oversized output)
            await self._reconnect()
            assert self._channel is not None
        if not await self._channel.settle(self._settings.interrupt_grace_s):
            await self.restart()
            notes.append("the previous, cancelled call did not stop; " + _RESTARTED)
            assert self._channel is not None
        oom_before = self.cgroup.oom_kills()
        pids_before = self.cgroup.pids_limit_hits()
        try:
            result, must_restart = await self._channel.execute(
                code,
                timeout=timeout,
                grace=self._settings.interrupt_grace_s,
                alive=self.alive,
                on_output=on_output,
            )
        except zmq.ZMQError:
            if not self._closed:
                raise
            return ExecutionResult("restarted", note="the session was closed during the call")
        if self._closed:
            return ExecutionResult("restarted", result.outputs, "the session was closed during the call")
        if result.note:
            notes.append(result.note)
        if self.cgroup.oom_kills() > oom_before:
            limit_mb = (self.cgroup.memory_override or self._settings.memory_mb * _MIB) // _MIB
            notes.append(f"a process was killed for exceeding the {limit_mb} MiB memory limit")
        if self.cgroup.pids_limit_hits() > pids_before:
            notes.append(
                f"creating a process failed: the limit of {self._settings.pids_max} processes/threads was reached"
            )
        if must_restart:
            await self.restart()
            notes.append(_RESTARTED)
        elif self._channel is not None and self._channel.broken and self.alive():
            await self._reconnect()
        elif result.status == "timeout":
            # Processes the interrupted code started (a fork bomb's copies of the kernel, a
            # hung subprocess) would otherwise hold the session's process slots forever.
            if await asyncio.to_thread(self._kill_strays):
                notes.append("processes started by the interrupted code were stopped")
        result.note = "; ".join(notes) or None
        return result

    async def put_file(self, name: str, data: bytes) -> str:
        return await asyncio.to_thread(hostfs.write_new_file, str(self.root / "data"), name, data, self.uid)

    async def list_files(self) -> list[SandboxFile]:
        found = await asyncio.to_thread(hostfs.snapshot, str(self.root / "data"))
        return [SandboxFile(path, st.size, st.mtime_ns) for path, st in sorted(found.items())]

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        return await asyncio.to_thread(hostfs.read_file, str(self.root / "data"), path, max_bytes)

    async def delete_file(self, path: str) -> bool:
        return await asyncio.to_thread(hostfs.remove_file, str(self.root / "data"), path)

    async def memory_bytes(self) -> int | None:
        if self.cgroup is None:
            return None
        return await asyncio.to_thread(self.cgroup.memory_usage)
