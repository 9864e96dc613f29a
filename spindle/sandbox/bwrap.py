"""The bubblewrap command line of a session: what the sandbox can see and do.

Inside, the kernel sees an empty root with only these mounts: the parts of /usr programs
and libraries need (``USR_DIRS``: not /usr/local, /usr/etc, /usr/src or the rest of
/usr/share) and the /bin, /lib... links to it, read-only; a handful of /etc files the C
library and Python need (no shadow, no ssh, no machine secrets), the sandbox's Python
read-only, a fresh /proc of its own PID namespace, a minimal /dev, and writable directories
from the session's size-limited tmpfs: /mnt/data, /tmp, /dev/shm and /run/spindle (the
kernel's IPC sockets; read-only once the kernel has started).

The command line is handed to bubblewrap through a file descriptor (``--args``), not argv:
bubblewrap is PID 1 inside, and its argv, readable as /proc/1/cmdline, would show host paths.

Every namespace is new (user, mount, PID, network, IPC, UTS, cgroup): the network namespace
holds only its own loopback, so neither the internet nor the host's 127.0.0.1 is reachable.
The process runs as uid 1000 inside a user namespace that maps to a per-session unprivileged
host uid, with no capabilities, no new user namespaces (``--disable-userns``), a seccomp
filter, a new terminal session, and an environment built from scratch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

SANDBOX_UID = 1000
IPC_DIR = "/run/spindle"
CONNECTION_FILE = f"{IPC_DIR}/connection.json"
DATA_DIR = "/mnt/data"

# /etc entries the dynamic loader, locale, time zone, fonts, mime types and Python read.
# fmt: off
_ETC_FILES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "fonts", "mime.types",
    "nsswitch.conf", "alternatives", "python3", "python3.11", "python3.12", "python3.13", "ssl/openssl.cnf",
)
# fmt: on
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What of /usr is shown: programs and libraries (the Python stdlib is in /usr/lib), and the
# data files they read (time zones, fonts, MIME types, locales). Not the host's own additions
# and settings (/usr/local, /usr/etc), sources, headers, docs or the rest of /usr/share.
# fmt: off
USR_DIRS = (
    "/usr/bin", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32",
    "/usr/share/zoneinfo", "/usr/share/fonts", "/usr/share/fontconfig", "/usr/share/mime",
    "/usr/share/locale", "/usr/share/i18n",
)
# fmt: on


def _covered(path: Path) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in USR_DIRS)


def python_mounts(python: Path) -> list[Path]:
    """Host directories the interpreter needs: its venv and its base installation."""
    mounts: list[Path] = []
    venv = python.parent.parent
    cfg = venv / "pyvenv.cfg"
    if cfg.is_file():
        mounts.append(venv)
        for line in cfg.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                mounts.append(Path(value.strip()).resolve().parent)
    mounts.append(python.resolve().parent.parent)
    unique: list[Path] = []
    for path in mounts:
        path = path.resolve()
        if path == Path("/usr"):
            continue  # a Debian python: its stdlib and binary are under the USR_DIRS
        if _covered(path):
            continue  # mounted anyway
        if path not in unique:
            unique.append(path)
    return unique


def sandbox_env(python: Path, cpus: float) -> dict[str, str]:
    """The whole environment of the kernel: nothing is inherited from the server."""
    threads = str(max(1, math.ceil(cpus)))
    return {
        "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "MPLCONFIGDIR": "/tmp/.matplotlib",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # One BLAS/OpenMP thread per CPU we are allowed: more only fight over the CFS quota.
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "NUMEXPR_MAX_THREADS": threads,
        # pandas 3 pulls in pyarrow, whose jemalloc reserves 1 GiB of address space up front;
        # with malloc instead, the per-process data limit (= the memory limit) stays meaningful.
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
    }


def bwrap_argv(
    *,
    bwrap: str,
    python: Path,
    ro_binds: list[Path],
    session_root: Path,
    seccomp_fd: int,
    cpus: float,
) -> list[str]:
    """The bubblewrap command that starts the kernel of the session rooted at ``session_root``:
    options, then ``--`` and the kernel's command (see ``split_options``).

    ``session_root`` holds ``data``, ``tmp``, ``ipc`` (writable by the session uid) and ``etc``
    (generated passwd/group/hosts, read-only inside)."""
    # fmt: off
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
    ]
    for usr in USR_DIRS:
        argv += ["--ro-bind-try", usr, usr]
    for name in _TOP_LEVEL_LINKS:
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    for name in _ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts"):
        argv += ["--ro-bind", str(session_root / "etc" / name), f"/etc/{name}"]
    for path in ro_binds:
        argv += ["--ro-bind", str(path), str(path)]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--bind", str(session_root / "tmp"), "/tmp",
        "--bind", str(session_root / "data"), DATA_DIR,
        "--bind", str(session_root / "ipc"), IPC_DIR,
        # bubblewrap's /dev/shm is a directory of its unbounded /dev tmpfs: use the session's.
        "--bind", str(session_root / "shm"), "/dev/shm",
        "--remount-ro", "/",
        "--chdir", DATA_DIR,
        "--seccomp", str(seccomp_fd),
        "--clearenv",
    ]
    for key, value in sandbox_env(python, cpus).items():
        argv += ["--setenv", key, value]
    argv += [
        "--",
        str(python), "-m", "ipykernel_launcher",
        "-f", CONNECTION_FILE,
        "--HistoryManager.enabled=False",
        "--IPKernelApp.log_level=ERROR",
    ]
    # fmt: on
    return argv


def split_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``bwrap_argv`` as (bubblewrap's options, ``--`` + the command): the options go through
    ``--args FD`` so that they never appear in an argv the sandbox can read."""
    cut = argv.index("--")
    return argv[1:cut], argv[cut:]


# Runs as the server's uid (root, or the ordinary user the server runs as): join the session's
# cgroups or write the pid file (so even bwrap is counted), then set the rlimits (``prlimit``:
# always the data size, so a large allocation is a MemoryError instead of waking the OOM
# killer, and no core dumps), drop to the session uid (``setpriv``, when the server is root)
# and become bubblewrap. Joining as root matters for cgroup v2, which lets a process move
# only if the writer may write the common ancestor's cgroup.procs. Arguments: N, N files to
# write the pid into, then the command.
LAUNCHER = r"""
set -e
n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1"; shift; n=$((n - 1)); done
exec "$@"
"""


def launcher_argv(
    join_files: list[str], prlimit_args: list[str], command: list[str], *, run_as: int | None
) -> list[str]:
    drop = (
        ["/usr/bin/setpriv", f"--reuid={run_as}", f"--regid={run_as}", "--clear-groups", "--"]
        if run_as is not None
        else []
    )
    return [
        "/bin/sh",
        "-c",
        LAUNCHER,
        "spindle-launcher",
        str(len(join_files)),
        *join_files,
        "/usr/bin/prlimit",
        *prlimit_args,
        "--",
        *drop,
        *command,
    ]


def etc_files() -> dict[str, str]:
    """Generated /etc/passwd, /etc/group and /etc/hosts (the host's are not shown)."""
    uid = SANDBOX_UID
    return {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{uid}:{uid}:sandbox:/tmp:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nsandbox:x:{uid}:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost\n",
    }
