"""``spindle serve --workers N``: N server processes on one host sharing one listening socket.

Each worker is a full ``spindle serve`` process (its own event loop, run engine, sandbox
instance and owner id) started with the socket's file descriptor; the kernel spreads new
connections over the workers that are accepting. Nothing is handed over between them in
memory: they coordinate through the store exactly as processes on different machines do
(leases, claims, session ownership), which is why a shared database (PostgreSQL) is required
— with the embedded SQLite each process would take the others' runs for a crashed server's.
The sandbox needs nothing extra: instances on one host already keep apart (an instance dir
and cgroup each, host uids held by flock).

The supervisor (this process) only restarts a worker that died and, on SIGTERM/SIGINT,
forwards the signal so every worker drains, then waits for them.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger(__name__)
_RESTART_PAUSE_S = 1.0  # a worker that dies at once must not spin the supervisor


def needs_shared_store(database_url: str) -> str | None:
    """Why ``--workers`` cannot run with this database (None: it can)."""
    if database_url.startswith(("postgres://", "postgresql://")):
        return None
    return ("--workers needs a database the processes share: set SPINDLE_DATABASE_URL=postgresql://... "
            "(with the embedded SQLite each process would settle the others' runs as a crashed server's)")


def supervise(host: str, port: int, workers: int, argv: list[str]) -> int:
    """Bind ``host:port``, run ``workers`` copies of ``spindle serve`` on it; returns on stop."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=2048)
    listener.set_inheritable(True)
    fd = listener.fileno()
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(index: int) -> None:
        command = [sys.executable, "-m", "spindle", "serve", "--worker-fd", str(fd), *argv]
        children[index] = subprocess.Popen(command, pass_fds=(fd,))
        log.info("worker %d started (pid %d)", index, children[index].pid)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(workers):
        start(index)
    while True:
        if stopping:
            for child in children.values():
                child.wait()
            listener.close()
            return 0
        for index, child in list(children.items()):
            code = child.poll()
            if code is not None and not stopping:
                log.warning("worker %d (pid %d) exited with %s; starting it again", index, child.pid, code)
                time.sleep(_RESTART_PAUSE_S)
                if not stopping:
                    start(index)
        time.sleep(0.2)
