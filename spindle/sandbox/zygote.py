"""Fast session starts: a template process with the kernel's modules loaded, forked per session.

A fresh session used to be a new interpreter importing ipykernel, numpy, pandas and matplotlib
inside a new bubblewrap sandbox: about 1-2 CPU-seconds, most of it imports. With the zygote
(``zygote_main.py``, run by the sandbox's Python) that cost is paid once per server; a session
is then

1. a bubblewrap sandbox built exactly as before (same launcher joining the session's cgroups,
   same user namespace mapping uid 1000 to the session's host uid, mounts, tmpfs binds,
   seccomp filter), whose command only signals that the sandbox is ready and waits, and
2. a fork of the zygote that joins the session's cgroups, enters that sandbox's namespaces,
   drops to uid 1000 without capabilities, loads the same seccomp filter and starts the kernel.

bubblewrap keeps doing the namespace and mount work; the zygote only *enters* what bubblewrap
built (``setns``, as nsenter does). See ``zygote_main.py`` for the child's steps and
docs/decisions/h-zygote.md for what was measured and why this design.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The order the child enters them: the user namespace last (entering it first would leave us
# without the rights to enter the others, which belong to it).
NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "mnt", "user")
# Reads the program from a pipe so that the zygote's (and every kernel's) /proc/PID/cmdline
# shows no host path.
_BOOT = (
    "import os,sys\n"
    "f=os.fdopen(int(sys.argv[1]),'rb');src=f.read();f.close()\n"
    "g={'__name__':'spindle_zygote'};exec(compile(src,'<spindle-zygote>','exec'),g)\n"
    "g['main'](int(sys.argv[2]))\n"
)
_SOURCE = Path(__file__).with_name("zygote_main.py")
_MAX_REPLY = 1 << 16


class ZygoteError(Exception):
    """The zygote could not start or could not make a session."""


@dataclass(frozen=True)
class ForkedKernel:
    pid: int  # host pid
    pidfd: int  # owned by the caller: readable once the kernel has exited
    waiter: int = 0  # host pid of bubblewrap's command in the same sandbox (it only waits)


class Zygote:
    """The server's handle on one zygote process. Not thread-safe: one request at a time
    (the provider calls it from its single spawner thread)."""

    def __init__(self, python: Path, env: dict[str, str], preload: list[str], seccomp: bytes) -> None:
        self._python = python
        self._env = env
        self._preload = preload
        self._seccomp = seccomp
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._log_fd = -1

    def start(self, timeout: float) -> list[str]:
        """Blocking: start the zygote and wait until its modules are loaded. Returns the
        preload problems it reported (modules that failed to import)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        src_read, src_write = os.pipe()
        self._log_fd = os.memfd_create("zygote-log", os.MFD_CLOEXEC)
        try:
            self._proc = subprocess.Popen(
                [str(self._python), "-I", "-c", _BOOT, str(src_read), str(theirs.fileno())],
                env=self._env,  # exactly the sandbox's: it is every kernel's /proc/self/environ
                stdin=subprocess.DEVNULL,
                stdout=self._log_fd,
                stderr=self._log_fd,
                pass_fds=(src_read, theirs.fileno()),
                start_new_session=True,
                cwd="/",
            )
        finally:
            os.close(src_read)
            theirs.close()
        self._sock = ours
        with os.fdopen(src_write, "wb") as fh:
            fh.write(_SOURCE.read_bytes())
        config = {"seccomp": self._seccomp.hex(), "preload": self._preload}
        ours.send(json.dumps(config).encode())
        reply = self._recv(timeout)[0]
        if "error" in reply or not reply.get("ready"):
            raise ZygoteError(f"the zygote did not start: {reply.get('error')}")
        return [str(p) for p in reply.get("problems", [])]

    def _recv(self, timeout: float) -> tuple[dict[str, Any], list[int]]:
        assert self._sock is not None
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            raise ZygoteError(f"the zygote did not answer within {timeout:.0f} s; log: {self.log_tail()}")
        msg, fds, _flags, _addr = socket.recv_fds(self._sock, _MAX_REPLY, 2)
        if not msg:
            for fd in fds:
                os.close(fd)
            raise ZygoteError(f"the zygote exited; log: {self.log_tail()}")
        try:
            reply = json.loads(msg)
        except ValueError as exc:
            for fd in fds:
                os.close(fd)
            raise ZygoteError(f"unreadable reply from the zygote: {exc}") from exc
        return (reply if isinstance(reply, dict) else {}), fds

    def fork_kernel(
        self,
        *,
        log_fd: int,
        procs_files: list[str],
        ns_fds: list[int],
        rlimits: dict[str, tuple[int, int]],
        cwd: str,
        argv: list[str],
        timeout: float,
    ) -> ForkedKernel:
        """Blocking: have a child of the zygote join the cgroups, enter the namespaces (fds in
        ``NAMESPACES`` order), set ``rlimits`` (``{"RLIMIT_DATA": (soft, hard)}``: the same the
        launcher sets for a fresh session) and start the kernel. The caller keeps its fds."""
        if self._sock is None or not self.alive():
            raise ZygoteError("the zygote is not running")
        procs = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in procs_files]
        try:
            request = {"procs": len(procs), "ns": list(NAMESPACES), "rlimits": rlimits,
                       "cwd": cwd, "argv": argv}
            socket.send_fds(self._sock, [json.dumps(request).encode()], [log_fd, *procs, *ns_fds])
        finally:
            for fd in procs:
                os.close(fd)
        try:
            reply, fds = self._recv(timeout)
        except ZygoteError:
            # No answer: its child hangs, and the zygote with it. Kill it; the next session
            # start finds it dead and starts a new one.
            if self._proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
            raise
        if "error" in reply or len(fds) != 1 or not isinstance(reply.get("pid"), int):
            for fd in fds:
                os.close(fd)
            raise ZygoteError(f"the zygote could not start the kernel: {reply.get('error', 'no pidfd')}")
        return ForkedKernel(reply["pid"], fds[0])

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            size = os.fstat(self._log_fd).st_size
            return os.pread(self._log_fd, 2000, max(0, size - 2000)).decode(errors="replace")
        return ""

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the zygote exits on EOF
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=2)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._log_fd != -1:
            os.close(self._log_fd)
            self._log_fd = -1


def _children(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return []


def sandbox_namespaces(bwrap_pid: int) -> tuple[int, list[int]]:
    """Blocking: the host pid of the sandbox's waiting command and its namespaces' fds
    (``NAMESPACES`` order), for the sandbox whose outer
    bubblewrap process is ``bwrap_pid`` (our child, not reaped), once its command has said
    it runs. They are taken from that command (the child of the sandbox's init), which is in
    the final state: bubblewrap's ``--disable-userns`` nests one more user namespace. Once the
    fds are open we check it is still that child, so a reused pid cannot hand us another
    process's namespaces."""
    inits = _children(bwrap_pid)
    commands = _children(int(inits[0])) if len(inits) == 1 else []
    if len(commands) != 1:
        raise ZygoteError(f"unexpected sandbox process tree: {inits} / {commands}")
    leaf = commands[0]
    fds: list[int] = []
    try:
        for name in NAMESPACES:
            fds.append(os.open(f"/proc/{leaf}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
        if _children(int(inits[0])) != [leaf] or _children(bwrap_pid) != inits:
            raise ZygoteError("the sandbox's processes changed while its namespaces were opened")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return int(leaf), fds


def pidfd_exited(pidfd: int) -> bool:
    """A pidfd is readable once its process has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))
