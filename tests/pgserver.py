"""A throwaway PostgreSQL server for the tests: a fresh cluster in a temporary directory, loopback TCP on a free port, trust auth, fsync off (the
tests measure behaviour, not durability on power loss; ``kill -9`` of Spindle is still real).

The binaries are those of the PyPI package ``pgserver`` (PostgreSQL 16 with the pgvector
extension, which the vector index on PostgreSQL needs: Debian bookworm packages no pgvector
for its PostgreSQL 15); without it, Debian's ``postgresql`` (then without pgvector).
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` system
user (``runuser``). ``start()`` raises ``PostgresUnavailable`` with the reason when the
binaries are missing, so a test tier can say why it cannot run.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _bundled_bin_dir() -> Path | None:
    """``pgserver``'s bundled binaries: from this interpreter's installed distribution (found
    without importing it: this module's name would shadow the package when ``tests/`` is on
    the path), else from the server's venv (``.venv``; the SDK venvs of the e2e tier lack it)."""
    from importlib import metadata

    candidates = []
    try:
        candidates.append(Path(str(metadata.distribution("pgserver").locate_file("pgserver/pginstall/bin"))))
    except metadata.PackageNotFoundError:
        pass
    repo = Path(__file__).resolve().parents[1]
    candidates += sorted(Path(p) for p in glob.glob(str(repo / ".venv/lib/python3*/site-packages/pgserver/pginstall/bin")))
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _bin_dir() -> Path:
    bundled = _bundled_bin_dir()
    if bundled is not None:
        return bundled
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise PostgresUnavailable("PostgreSQL is not installed (PyPI package 'pgserver' or Debian package "
                                  "'postgresql'; scripts/setup.sh installs both)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="spindle-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://spindle@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://spindle@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> PostgresServer:
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        result = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "spindle", "-A", "trust",
                           "-E", "UTF8", "--no-sync")
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {result.stderr[-2000:]}")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                           "-o", options, "-w", "-t", "60", "start")
        if result.returncode != 0:
            log = (self.dir / "log").read_text(errors="replace")[-2000:] if (self.dir / "log").exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {result.stderr[-1000:]} {log}")
        return self

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(name)
        result = self._run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "spindle",
                           "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}")
        if result.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE {name}: {result.stderr}")
        return self.database_url(name)

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_ready(url: str, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
