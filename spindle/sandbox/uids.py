"""Host uids for sessions: one per live session, unique across all Spindle processes on the host.

Giving every session its own unprivileged uid means that even a process that escaped its
namespaces could not signal, trace or read another session's processes and files. A uid is
owned by holding an ``flock`` on ``/run/spindle-sandbox-uids/<uid>.lock``: the kernel drops the lock when
the owner exits, so a crashed server never leaks uids and two servers never share one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

from spindle.sandbox.errors import SandboxUnavailable, SessionFailed
from spindle.sandbox.settings import UID_RANGE

# Host-wide, not under the work dir: two servers with different work dirs but overlapping
# uid ranges must still never hand out the same uid. Locks are named by uid, not by slot.
LOCK_DIR = Path("/run/spindle-sandbox-uids")


class UidAllocator:
    def __init__(self, lock_dir: Path, base: int, count: int = UID_RANGE) -> None:
        self._dir = lock_dir
        self._base = base
        self._count = count
        self._held: dict[int, int] = {}  # uid -> fd holding its lock

    def setup(self) -> None:
        self._dir.mkdir(mode=0o700, exist_ok=True)
        if self._dir.is_symlink() or self._dir.stat().st_uid != os.geteuid():
            raise SandboxUnavailable(f"{self._dir} is not this user's directory")

    def acquire(self) -> int:
        """Blocking: a free uid, locked until ``release``. Raises ``SessionFailed`` when none is."""
        # A random slot, not the next one: the host uid is visible inside (/proc/self/uid_map)
        # and must not tell the code how many sessions came before it.
        start = secrets.randbelow(self._count)
        for step in range(self._count):
            n = (start + step) % self._count
            uid = self._base + n
            if uid in self._held:
                continue
            fd = os.open(self._dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._held[uid] = fd
            return uid
        raise SessionFailed("no free sandbox uid")

    def release(self, uid: int) -> None:
        fd = self._held.pop(uid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class SharedUid:
    """Rootless: every session runs as the server's own uid (an unprivileged user namespace
    maps only that one), so there is nothing to allocate."""

    def __init__(self, uid: int) -> None:
        self._uid = uid

    def setup(self) -> None:
        pass

    def acquire(self) -> int:
        return self._uid

    def release(self, uid: int) -> None:
        pass
