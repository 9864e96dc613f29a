"""Host uids for sessions: one per live session, unique across all Spindle processes on the host.

Giving every session its own unprivileged uid means that even a process that escaped its
namespaces could not signal, trace or read another session's processes and files. A uid is
owned by holding an ``flock`` on ``<work_dir>/uids/<n>.lock``: the kernel drops the lock when
the owner exits, so a crashed server never leaks uids and two servers never share one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

from spindle.sandbox.errors import SessionFailed

UID_RANGE = 65536


class UidAllocator:
    def __init__(self, lock_dir: Path, base: int, count: int = UID_RANGE) -> None:
        self._dir = lock_dir
        self._base = base
        self._count = count
        self._held: dict[int, int] = {}  # uid -> fd holding its lock

    def setup(self) -> None:
        self._dir.mkdir(mode=0o700, exist_ok=True)

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
            fd = os.open(self._dir / f"{n}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
