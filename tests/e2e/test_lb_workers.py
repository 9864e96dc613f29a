"""``spindle serve --workers 2`` on PostgreSQL: two processes answer on one port, a worker
killed with -9 is started again by the supervisor, SIGTERM stops them all; with SQLite the
flag is refused (the processes would settle each other's runs as a crashed server's)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import harness
import httpx
import pytest

pytestmark = [pytest.mark.min_sdk(2), pytest.mark.timeout(300),
              pytest.mark.skipif(harness.topology_processes() > 1, reason="runs in the single-process passes"),
    # It brings its own PostgreSQL + S3: once per test.sh is enough (the SQLite pass).
    pytest.mark.skipif(bool(os.environ.get("SPINDLE_TEST_BACKENDS")), reason="runs in the SQLite pass")]


def _processes_answering(url: str, tries: int = 40) -> set[str]:
    seen: set[str] = set()
    for _ in range(tries):
        with httpx.Client(timeout=10) as fresh:  # a new connection each time: the kernel picks a worker
            seen.add(fresh.get(url + "/healthz").json()["process"])
    return seen


def _wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_workers_share_the_port_and_are_supervised(upstream: harness.Upstream, tmp_path: Path) -> None:
    port = harness.free_port()
    env = harness.child_env(harness.backend_env("postgres+s3") | {
        "SPINDLE_SANDBOX_ENABLED": "false", "SPINDLE_DRAIN_TIMEOUT_S": "5",
        "SPINDLE_LLM_BASE_URL": upstream.base_url, "SPINDLE_LLM_API_KEY": upstream.api_key})
    log = (tmp_path / "workers.log").open("wb")
    supervisor = subprocess.Popen([harness.spindle_python(), "-m", "spindle", "serve", "--workers", "2",
                                   "--port", str(port), "--data-dir", str(tmp_path / "data")],
                                  cwd=harness.REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: len(_processes_answering(url, 10)) == 2, 180)
        first = _processes_answering(url)
        assert len(first) == 2, first
        # a run works whichever worker takes which request
        client = harness.make_client("openai", url)
        upstream.script("hello workers", [{"content": "hi from a worker"}])
        assistant = client.beta.assistants.create(model="m")
        run = client.beta.threads.create_and_run_poll(
            assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hello workers"}]},
            poll_interval_ms=50)
        assert run.status == "completed", run.last_error
        client.close()
        victim = sorted(first)[0]
        os.kill(int(victim.split("|")[1]), signal.SIGKILL)
        _wait_for(lambda: len(seen := _processes_answering(url, 10)) == 2 and victim not in seen, 180)
        assert supervisor.poll() is None
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/healthz", timeout=5)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        log.close()
    survivors = subprocess.run(["pgrep", "-f", f"--worker-fd.*--port={port}"], capture_output=True, text=True)
    assert survivors.stdout.strip() == "", survivors.stdout


def test_workers_need_a_shared_database(tmp_path: Path) -> None:
    done = subprocess.run([harness.spindle_python(), "-m", "spindle", "serve", "--workers", "2",
                           "--port", str(harness.free_port()), "--data-dir", str(tmp_path / "data")],
                          cwd=harness.REPO_ROOT, env=harness.child_env({"SPINDLE_DATABASE_URL": ""}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--workers needs a database the processes share" in done.stderr
