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


class SpindleServer:
    """``python -m spindle serve`` on a fixed port and data dir, which restarts keep."""

    def __init__(
        self,
        data_dir: Path,
        *,
        upstream: Upstream | None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}.log"
        self.env: dict[str, str] = {}
        if upstream is not None:
            self.env |= {"SPINDLE_LLM_BASE_URL": upstream.base_url, "SPINDLE_LLM_API_KEY": upstream.api_key}
        self.env |= backend_env()  # keeps its database and bucket across restarts
        self.env |= dict(env or {})
        self.child: ChildProcess | None = None

    @property
    def base_url(self) -> str:
        """The server root: ``OpenAI(base_url=base_url + "/v1")``, ``AzureOpenAI(azure_endpoint=base_url)``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.alive

    def start(self, timeout: float = 60.0) -> SpindleServer:
        argv = [
            spindle_python(), "-m", "spindle", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        env = child_env({"SPINDLE_DATA_DIR": str(self.data_dir), **self.env})
        self.child = ChildProcess("spindle server", argv, env, self.log_path)
        self.child.start()
        self.child.wait_ready(self.base_url + "/healthz", timeout)
        return self

    def stop(self) -> None:
        """Graceful stop (SIGTERM)."""
        if self.child is not None:
            self.child.stop()

    def kill9(self) -> None:
        """Crash it: SIGKILL, no shutdown code runs."""
        if self.child is not None:
            self.child.kill9()

    def restart(self, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> SpindleServer:
        """Stop if running, then start again on the same port and data dir (``env`` is merged in)."""
        self.stop()
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


def backend_env() -> dict[str, str]:
    """With ``SPINDLE_TEST_BACKENDS=postgres+s3``: settings giving a new server its own fresh
    PostgreSQL database and S3 bucket, on throwaway servers started on first use."""
    import secrets
    import sys

    wanted = set(filter(None, os.environ.get("SPINDLE_TEST_BACKENDS", "").split("+")))
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
