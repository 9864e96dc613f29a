"""Processes for the end-to-end tier: the scripted upstream and a real Spindle server.

The e2e tests run under SDK-only venvs (openai, pytest, httpx), so nothing here imports
spindle, starlette or uvicorn: both servers are subprocesses of the main venv's python
(``$SPINDLE_PYTHON`` or ``<repo>/.venv/bin/python``), talked to over HTTP. The benchmark
reuses this module under the main venv. pytest is imported only inside ``requires_sdk``.

Each child writes stdout/stderr to a log file; a failed start raises ``StartError`` carrying
the log, so the reason is in the test report rather than lost.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_API_KEY = "sk-upstream-test"
# Settings from the developer's shell that would silently change what a test means (keys,
# which model, where data goes) are dropped; other SPINDLE_* settings (sandbox, index) pass.
_DROPPED_PREFIXES = ("SPINDLE_LLM_", "OPENAI_", "AZURE_OPENAI_")
_DROPPED_NAMES = frozenset({"SPINDLE_API_KEYS", "SPINDLE_DATA_DIR", "SPINDLE_HOST", "SPINDLE_PORT"})
_LOG_TAIL_CHARS = 20_000
_children: list[ChildProcess] = []


class StartError(RuntimeError):
    """A child process did not become ready; the message ends with its log."""


def spindle_python() -> str:
    """The interpreter that has spindle's dependencies (never the SDK venv's own)."""
    return os.environ.get("SPINDLE_PYTHON") or str(REPO_ROOT / ".venv" / "bin" / "python")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED_NAMES
    }
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the file before a kill -9
    # Stopping a test server must not wait a minute for the hanging runs tests leave behind;
    # tests of the drain itself set their own.
    env.setdefault("SPINDLE_DRAIN_TIMEOUT_S", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


class ChildProcess:
    """A subprocess whose output goes to a log file that survives restarts (appended)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if self not in _children:
            _children.append(self)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL if it does not exit in time."""
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode("utf-8", "replace")

    def wait_ready(self, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 200; raise ``StartError`` with the log if it never does."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.process.returncode if self.process else None
                raise StartError(
                    f"{self.name} exited with code {code} before it was ready.\n{self._log_tail()}"
                )
            try:
                response = httpx.get(url, timeout=2.0)
                if response.status_code == 200 and self.alive:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.05)
        self.kill9()
        raise StartError(
            f"{self.name} was not ready at {url} after {timeout:g}s ({last}).\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        return f"--- {self.log_path} ---\n{self.log_text()[-_LOG_TAIL_CHARS:]}"


@atexit.register
def _kill_leftovers() -> None:
    # A crashed test session must not leave servers holding ports and CPU.
    for child in _children:
        child.kill9()


class Upstream:
    """The scripted upstream model, run as ``python -m tests.upstream`` and scripted over HTTP."""

    def __init__(self, log_dir: Path, *, api_key: str = UPSTREAM_API_KEY, delay_ms: float = 0.0) -> None:
        self.port = free_port()
        self.api_key = api_key
        argv = [spindle_python(), "-m", "tests.upstream", "--port", str(self.port), "--api-key", api_key]
        if delay_ms:
            argv += ["--delay-ms", str(delay_ms)]
        self.child = ChildProcess("scripted upstream", argv, child_env(), log_dir / "upstream.log")

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """For an OpenAI client or ``SPINDLE_LLM_BASE_URL``."""
        return self.root_url + "/v1"

    def start(self, timeout: float = 30.0) -> Upstream:
        self.child.start()
        self.child.wait_ready(self.root_url + "/healthz", timeout)
        return self

    def stop(self) -> None:
        self.child.stop()

    def script(self, match: str, replies: list[dict[str, Any]]) -> None:
        """Requests containing ``match`` get ``replies`` in turn (the last one repeats)."""
        response = httpx.post(f"{self.root_url}/_script", json={"match": match, "replies": replies})
        if response.status_code != 200:
            raise ValueError(response.json()["error"]["message"])

    def requests(self, full: bool = False) -> list[Any]:
        """Chat request bodies received so far; ``full`` adds method, path, query and headers."""
        response = httpx.get(f"{self.root_url}/_requests", params={"full": "1"} if full else None)
        response.raise_for_status()
        return list(response.json())

    def reset(self) -> None:
        """Forget all rules and logged requests."""
        httpx.post(f"{self.root_url}/_reset").raise_for_status()


def wait_until(predicate: Any, timeout: float, what: str, poll_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def topology_processes(topology: str | None = None) -> int:
    """How many ``spindle serve`` processes one test server is: 1, or N for
    ``SPINDLE_TEST_TOPOLOGY=lbN`` (N processes on one PostgreSQL + S3 behind nginx)."""
    name = os.environ.get("SPINDLE_TEST_TOPOLOGY", "") if topology is None else topology
    if not name:
        return 1
    match = re.fullmatch(r"lb([1-9])", name)
    if not match:
        raise ValueError(f"SPINDLE_TEST_TOPOLOGY={name!r}: expected lb1 .. lb9")
    return int(match.group(1))


def nginx_binary() -> str:
    for candidate in (os.environ.get("SPINDLE_TEST_NGINX"), "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StartError("nginx is not installed: run scripts/setup_lb.sh (as root)")


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {run}/nginx.pid;
error_log {log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    # Spindle enforces its own body limits (and answers them with OpenAI's envelope).
    client_max_body_size 0;
    upstream spindle {{
        # Round robin. A process that refuses a connection (stopped, killed) is skipped for
        # a second; nginx OSS has no active health checks.
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://spindle;
            proxy_http_version 1.1;
            # No upstream keep-alive: a request sent on a kept-alive connection that a
            # draining process is closing fails *after* it was sent, and nginx never retries
            # a POST then (it would create a second run); a refused new connection is retried
            # on the next process, which is what a rolling restart needs.
            proxy_set_header Connection "close";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            # Server-sent events pass through as they are written.
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_cache off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_connect_timeout 5s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


class Balancer:
    """nginx (Debian's package) round-robin in front of some ports, with its own config and
    temp dir, in the foreground (a child of the test like the servers)."""

    def __init__(self, ports: list[int], port: int, run_dir: Path, log_path: Path) -> None:
        self.ports = ports
        self.port = port
        self.run_dir = run_dir
        self.log_path = log_path
        self.child: ChildProcess | None = None

    def start(self, timeout: float = 20.0) -> Balancer:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=1s;" for p in self.ports)
        # Workers as root only when the master is root: its temp dirs are in root's tmp.
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = self.run_dir / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(user=user, run=self.run_dir, log=self.log_path, servers=servers,
                                           port=self.port))
        argv = [nginx_binary(), "-p", str(self.run_dir), "-e", str(self.log_path), "-c", str(conf)]
        self.child = ChildProcess("nginx", argv, child_env(), self.log_path)
        self.child.start()
        self.child.wait_ready(f"http://127.0.0.1:{self.port}/healthz", timeout)
        return self

    def stop(self) -> None:
        # nginx: SIGTERM = fast shutdown, SIGQUIT = graceful; streams are the servers' to end.
        if self.child is not None:
            self.child.stop()

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.alive


class SpindleServer:
    """``python -m spindle serve`` on a fixed port and data dir, which restarts keep.

    With ``processes > 1`` (default from ``SPINDLE_TEST_TOPOLOGY=lbN``) it is N processes on
    one PostgreSQL database and S3 bucket behind nginx; ``base_url``/``port`` are the
    balancer's, every request may land on any process, and ``stop``/``kill9``/``restart``
    act on all of them (``processes_``/``kill9_one`` reach one)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        upstream: Upstream | None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        processes: int | None = None,
        balanced: bool | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}.log"
        self.processes = topology_processes() if processes is None else processes
        self.env: dict[str, str] = {}
        if upstream is not None:
            self.env |= {"SPINDLE_LLM_BASE_URL": upstream.base_url, "SPINDLE_LLM_API_KEY": upstream.api_key}
        self.env |= backend_env()  # keeps its database and bucket across restarts
        self.env |= dict(env or {})
        if self.processes > 1 and not self.env.get("SPINDLE_DATABASE_URL", "").startswith("postgres"):
            raise StartError(f"{self.processes} processes need one shared database: set "
                             "SPINDLE_TEST_BACKENDS=postgres+s3 (or pass SPINDLE_DATABASE_URL)")
        # Behind nginx: always with several processes, with one when asked (benchmarks compare).
        balanced = self.processes > 1 if balanced is None else balanced
        # One port per process; without a balancer it is the server's own port.
        self.process_ports = [free_port() for _ in range(self.processes)] if balanced else [self.port]
        self.children: list[ChildProcess | None] = [None] * self.processes
        self.balancer: Balancer | None = None
        if balanced:
            self.balancer = Balancer(self.process_ports, self.port, self.log_path.parent / f"{self.log_path.stem}-lb",
                                     self.log_path)

    @property
    def child(self) -> ChildProcess | None:
        return self.children[0]

    @property
    def base_url(self) -> str:
        """The server root: ``OpenAI(base_url=base_url + "/v1")``, ``AzureOpenAI(azure_endpoint=base_url)``."""
        return f"http://127.0.0.1:{self.port}"

    def process_url(self, index: int) -> str:
        """One process's own address, past the balancer."""
        return f"http://127.0.0.1:{self.process_ports[index]}"

    @property
    def alive(self) -> bool:
        processes = all(c is not None and c.alive for c in self.children)
        return processes and (self.balancer is None or self.balancer.alive)

    def process_data_dir(self, index: int) -> Path:
        return self.data_dir if index == 0 else self.data_dir.parent / f"{self.data_dir.name}-p{index}"

    def start_process(self, index: int, timeout: float = 60.0, wait: bool = True) -> None:
        port = self.process_ports[index]
        data_dir = self.process_data_dir(index)
        argv = [
            spindle_python(), "-m", "spindle", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
        ]  # fmt: skip
        # The sandbox settings stay shared: processes on one host already keep apart (an
        # instance dir and cgroup each under the work dir, host uids held by flock).
        env = child_env({"SPINDLE_DATA_DIR": str(data_dir), **self.env})
        name = "spindle server" if self.processes == 1 else f"spindle server p{index}"
        child = ChildProcess(name, argv, env, self.log_path)
        self.children[index] = child
        child.start()
        if wait:
            child.wait_ready(f"http://127.0.0.1:{port}/healthz", timeout)

    def start(self, timeout: float = 60.0) -> SpindleServer:
        # All at once, then wait for each: a loaded machine starts them in parallel.
        started = [i for i in range(self.processes)
                   if not (self.children[i] and self.children[i].alive)]  # type: ignore[union-attr]
        for index in started:
            self.start_process(index, timeout, wait=False)
        for index in started:
            child = self.children[index]
            assert child is not None
            child.wait_ready(f"http://127.0.0.1:{self.process_ports[index]}/healthz", timeout)
        if self.balancer is not None and not self.balancer.alive:
            self.balancer.start()
        return self

    def stop(self) -> None:
        """Graceful stop (SIGTERM) of every process, then the balancer."""
        for child in self.children:
            if child is not None:
                child.stop()
        if self.balancer is not None:
            self.balancer.stop()

    def stop_one(self, index: int) -> None:
        """SIGTERM one process and wait for its exit (a rolling restart's step)."""
        child = self.children[index]
        if child is not None:
            child.stop(timeout=120.0)

    def restart_one(self, index: int, timeout: float = 120.0) -> None:
        """SIGTERM one process, wait for its exit, start it again on the same port."""
        self.stop_one(index)
        self.start_process(index, timeout)

    def kill9(self) -> None:
        """Crash it: SIGKILL every process, no shutdown code runs (the balancer stays)."""
        for child in self.children:
            if child is not None:
                child.kill9()

    def kill9_one(self, index: int) -> None:
        child = self.children[index]
        if child is not None:
            child.kill9()

    def restart(self, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> SpindleServer:
        """Stop if running, then start again on the same port and data dir (``env`` is merged in)."""
        for child in self.children:
            if child is not None:
                child.stop()
        self.env |= dict(env or {})
        return self.start(timeout)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        return self.child.log_text(since) if self.child else ""

    def __enter__(self) -> SpindleServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_BACKEND_SERVERS: dict[str, Any] = {}


def backend_env(backends: str | None = None) -> dict[str, str]:
    """With ``SPINDLE_TEST_BACKENDS=postgres+s3`` (or ``backends``): settings giving a new
    server its own fresh PostgreSQL database and S3 bucket, on throwaway servers started on
    first use."""
    import secrets
    import sys

    chosen = os.environ.get("SPINDLE_TEST_BACKENDS", "") if backends is None else backends
    wanted = set(filter(None, chosen.split("+")))
    if not wanted:
        return {}
    sys.path.insert(0, str(REPO_ROOT))
    from tests.pgserver import PostgresServer
    from tests.s3server import S3Server

    env: dict[str, str] = {}
    if "postgres" in wanted:
        if "postgres" not in _BACKEND_SERVERS:
            _BACKEND_SERVERS["postgres"] = PostgresServer().start()
            atexit.register(_BACKEND_SERVERS["postgres"].stop)
        env["SPINDLE_DATABASE_URL"] = _BACKEND_SERVERS["postgres"].create_database("e_" + secrets.token_hex(6))
    if "s3" in wanted:
        if "s3" not in _BACKEND_SERVERS:
            _BACKEND_SERVERS["s3"] = S3Server().start(spindle_python())
            atexit.register(_BACKEND_SERVERS["s3"].stop)
        server = _BACKEND_SERVERS["s3"]
        bucket = "e-" + secrets.token_hex(6)
        server.create_bucket(bucket)
        env |= server.env() | {"SPINDLE_BLOB_URL": f"s3://{bucket}/files"}
    return env


def start_upstream(log_dir: Path, **kwargs: Any) -> Upstream:
    return Upstream(log_dir, **kwargs).start()


def start_server(
    upstream: Upstream | None, data_dir: Path, env: Mapping[str, str] | None = None, **kwargs: Any
) -> SpindleServer:
    """Start a Spindle server wired to ``upstream`` (None: no model configured)."""
    return SpindleServer(data_dir, upstream=upstream, env=env, **kwargs).start()


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def openai_version() -> tuple[int, ...]:
    import openai

    return parse_version(openai.__version__)


def default_azure_api_version(sdk: tuple[int, ...] | None = None) -> str:
    # SDKs before 1.21 speak Assistants v1, which Azure serves as 2024-02-15-preview.
    return "2024-02-15-preview" if (sdk or openai_version()) < (1, 21) else "2024-05-01-preview"


def make_client(
    kind: str, server_url: str, *, api_key: str = "sk-test", api_version: str | None = None, **kwargs: Any
) -> Any:
    """An ``openai.OpenAI`` (kind "openai") or ``openai.AzureOpenAI`` (kind "azure") for ``server_url``.

    Retries are off by default: an error from the server must fail the test at once, not
    after the SDK's backoff has hidden it.
    """
    import openai

    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 60.0)
    if kind == "openai":
        return openai.OpenAI(base_url=f"{server_url}/v1", api_key=api_key, **kwargs)
    if kind == "azure":
        version = api_version or default_azure_api_version()
        return openai.AzureOpenAI(azure_endpoint=server_url, api_key=api_key, api_version=version, **kwargs)
    raise ValueError(f"unknown client kind {kind!r}; expected 'openai' or 'azure'")


def requires_sdk(*minimum: int, reason: str = "") -> Any:
    """``@requires_sdk(1, 40)``: skip the test when the installed openai SDK is older."""
    import pytest

    version = openai_version()
    wanted = ".".join(map(str, minimum))
    return pytest.mark.skipif(
        version < minimum, reason=reason or f"needs openai>={wanted}, have {'.'.join(map(str, version))}"
    )
