"""The zygote: a template process, forked once per session, that has the kernel's modules loaded.

This file is *not* imported by the server. ``spindle.sandbox.zygote`` reads it and runs it with
the sandbox's own Python (``python -I -c BOOT``, the source on a pipe), as root on the host but
in a mount namespace of its own whose /tmp is a private tmpfs (so nothing is written to the
host's /tmp, and the paths the modules cache at import, such as matplotlib's config dir
``/tmp/.matplotlib``, are the same inside every sandbox). It never runs user code, opens no
sockets but its control socket, and starts no threads (checked before the first fork).

Per session the server sends one request on the control socket (SOCK_SEQPACKET) with, as file
descriptors: the kernel's log (stdout/stderr), the session's ``cgroup.procs`` files, and the
namespaces of a bubblewrap sandbox it has just built for the session (bubblewrap made the user
namespace with the session's host uid, the mounts, the tmpfs binds, the seccomp filter; its
command only waits). The zygote enters the sandbox's PID namespace for its children only,
forks the kernel-to-be into it, returns to its own PID namespace at once and sends the server
a pidfd of the child. The child:

1. joins the session's cgroups (every process after it is counted), sets the rlimits;
2. drops supplementary groups, enters the sandbox's other namespaces (user last), drops the
   capability bounding set, becomes uid/gid 1000 of that user namespace (= the session's host
   uid) and clears every capability;
3. starts a new terminal session, gets /dev/null and the log as stdio, closes
   every other fd, checks it holds no capability, sets ``no_new_privs``, loads the same seccomp
   filter bubblewrap applies, and only then starts ipykernel with its connection file.

Memory is copy-on-write after fork: nothing writable is shared between sessions.
"""

# ruff: noqa: PLC0415
# (The zygote answers as soon as it has forked; a child that fails says why in its log, and
# the server sees it exit through the pidfd.)

from __future__ import annotations

import ctypes
import importlib
import io
import json
import os
import resource
import select
import signal
import socket
import sys
from typing import Any

_CLONE_NEWNS = 0x00020000
_CLONE_NEWPID = 0x20000000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_MS_NOSUID = 2
_MS_NODEV = 4
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SANDBOX_ID = 1000
_MAX_FDS = 32

# What a kernel imports while it starts, on top of ``ipykernel.kernelapp`` (measured: the
# sys.modules of a fresh kernel); importing them here saves each session about 0.1 CPU-s.
_KERNEL_MODULES = (
    "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.debugger", "IPython.core.completerlib",
    "IPython.core.magics.execution", "IPython.core.pylabtools", "IPython.core.debugger",
    "IPython.extensions.storemagic", "matplotlib_inline.backend_inline", "tornado.queues",
)  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)


def _ok(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _private_tmp() -> None:
    """A mount namespace of our own, with a private tmpfs on /tmp and the cwd in it."""
    _ok(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    # The kernels are orphaned when their intermediate parent exits; entering a PID namespace
    # does not make its init their reaper (a reaper is found in the parent's namespace), so
    # they come back to us rather than to the host's init, and we reap them.
    _ok(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")
    _ok(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _ok(_libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount(/, private)")
    _ok(
        _libc.mount(b"tmpfs", b"/tmp", b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0700,size=64m"),
        "mount(tmpfs /tmp)",
    )
    os.chdir("/tmp")


def _preload(modules: list[str]) -> list[str]:
    """Import what every session would import, and warm it up like the session's preload."""
    problems: list[str] = []
    # pyarrow's jemalloc (pulled in by pandas) starts a background purging thread, and a
    # process with threads cannot be forked safely. The kernels use malloc anyway
    # (ARROW_DEFAULT_MEMORY_POOL=system); this only keeps jemalloc from starting its thread.
    os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    for name in [*_KERNEL_MODULES, *modules]:
        try:
            importlib.import_module(name)
        except Exception as exc:
            problems.append(f"{name}: {exc!r}")
    try:
        if "matplotlib.pyplot" in sys.modules:
            plt = sys.modules["matplotlib.pyplot"]
            fig = plt.figure()
            fig.gca().plot([0, 1])
            fig.savefig(io.BytesIO(), format="png")
            plt.close(fig)
        if "pandas" in sys.modules:
            repr(sys.modules["pandas"].DataFrame({"a": [1]}))
    except Exception as exc:
        problems.append(f"warm-up: {exc!r}")
    return problems


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _drop_to_sandbox_user() -> None:
    cap = 0
    while _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    os.setresgid(_SANDBOX_ID, _SANDBOX_ID, _SANDBOX_ID)
    os.setresuid(_SANDBOX_ID, _SANDBOX_ID, _SANDBOX_ID)
    # Leaving uid 0 clears capabilities only when 0 is that namespace's root, and the host's
    # root is not mapped in the sandbox's user namespace: clear them all explicitly.
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _ok(_libc.capset(ctypes.byref(header), data), "capset")


def _child(req: dict[str, Any], fds: list[int]) -> None:
    """The kernel-to-be, already in the sandbox's PID namespace: cgroups, limits, the other
    namespaces, uid; then the kernel. Never returns."""
    n_procs = int(req["procs"])
    log_fd, procs, ns_fds = fds[0], fds[1 : 1 + n_procs], fds[1 + n_procs :]
    for fd in procs:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
    for name, (soft, hard) in req["rlimits"].items():  # the launcher's limits, by name
        if not name.startswith("RLIMIT_"):
            raise ValueError(f"not an rlimit: {name}")
        resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))
    os.setgroups([])  # before the user namespace, where setgroups is denied
    for name, fd in zip(req["ns"], ns_fds, strict=True):
        if name != "pid":  # entered by the zygote for this fork
            _ok(_libc.setns(fd, 0), f"setns({name})")
        os.close(fd)
    _drop_to_sandbox_user()
    _kernel(req, log_fd)


def _kernel(req: dict[str, Any], log_fd: int) -> None:
    code = 1
    try:
        os.setsid()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.closerange(3, 65536)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        with open("/proc/self/status", encoding="ascii") as fh:
            caps = {k: v.strip() for k, _, v in (line.partition(":") for line in fh) if k.startswith("Cap")}
        if any(int(v, 16) for v in caps.values()):
            raise RuntimeError(f"capabilities left after dropping privileges: {caps}")
        if os.getuid() != _SANDBOX_ID or os.getgid() != _SANDBOX_ID or os.getgroups():
            raise RuntimeError("not the sandbox user")
        _ok(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        bpf = ctypes.create_string_buffer(_SECCOMP)
        prog = _SockFprog(len(_SECCOMP) // 8, ctypes.addressof(bpf))
        _ok(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")
        os.chdir(req["cwd"])
        # The template's random state is every session's: give each its own.
        importlib.import_module("random").seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.argv = ["ipykernel_launcher", *req["argv"]]
        importlib.import_module("ipykernel.kernelapp").launch_new_instance()
        code = 0
    except BaseException as exc:  # the log is the server's only view of a failed start
        with __import__("contextlib").suppress(Exception):
            os.write(2, f"zygote: kernel start failed: {exc!r}\n".encode())
    os._exit(code)


def _reap() -> None:
    """Collect the kernels that have exited (their exit was already seen through pidfds)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFSIGNALED(status):  # the kernel's own log cannot say this
            print(f"zygote: child {pid} killed by signal {os.WTERMSIG(status)}", file=sys.stderr, flush=True)


def main(sock_fd: int) -> None:
    global _SECCOMP
    sock = socket.socket(fileno=sock_fd)
    config = json.loads(sock.recv(1 << 20))
    _SECCOMP = bytes.fromhex(config["seccomp"])
    _private_tmp()
    sys.dont_write_bytecode = True
    problems = _preload(config["preload"])
    threads = _threads()
    if threads != 1:
        sock.send(json.dumps({"error": f"the template has {threads} threads; it cannot fork safely"}).encode())
        return
    sock.send(json.dumps({"ready": True, "problems": problems}).encode())
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    while True:
        _reap()
        if not select.select([sock], [], [], 1.0)[0]:
            continue
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, _MAX_FDS)
        if not msg:
            return  # the server went away
        try:
            pid = _fork_into(json.loads(msg), fds, own_pid_ns, sock)
        except Exception as exc:  # nothing was started: say why
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"error": repr(exc)[:500]}).encode())
            continue
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [pidfd])
        os.close(pidfd)


def _back_to_own_pid_namespace(own_pid_ns: int) -> None:
    if _libc.setns(own_pid_ns, _CLONE_NEWPID) != 0:
        os._exit(70)  # our next children would land in that sandbox: never serve again


def _fork_into(req: dict[str, Any], fds: list[int], own_pid_ns: int, sock: socket.socket) -> int:
    """Fork the kernel-to-be directly into the sandbox's PID namespace (entering a PID
    namespace applies to children only, and we return to our own right after), so it needs
    no fork of its own; returns its host pid. The child reports failures in its log."""
    names = list(req["ns"])
    if len(fds) != 1 + int(req["procs"]) + len(names) or names[-1] != "user":
        raise ValueError("bad request: fds and namespace list do not match")
    pid_ns = fds[1 + int(req["procs"]) + names.index("pid")]
    _ok(_libc.setns(pid_ns, _CLONE_NEWPID), "setns(pid)")
    try:
        pid = os.fork()
    except BaseException:
        _back_to_own_pid_namespace(own_pid_ns)
        raise
    if pid != 0:
        _back_to_own_pid_namespace(own_pid_ns)
        return pid
    try:
        sock.close()  # the server's requests are the zygote's, not the kernel's
        os.close(own_pid_ns)
        _child(req, fds)
    except BaseException as exc:
        with __import__("contextlib").suppress(Exception):
            os.write(fds[0], f"zygote: the session could not be entered: {exc!r}\n".encode())
    os._exit(1)


_SECCOMP = b""  # the BPF program, set by main from the server's config
