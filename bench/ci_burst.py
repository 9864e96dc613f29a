"""Burst of new Code Interpreter threads through the real server and the official SDK.

Used by ``bench_code_interpreter.py``. Starts the scripted upstream and a Spindle server (the
e2e harness), waits until the session pool is full, then starts N runs at once, each in a new
thread whose first tool call is ``print(6*7)``-like code that prints the wall-clock time it ran
at (the sandbox shares the host's clock). Time to first execution = that time minus the burst
start; the run's completion time is reported too.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import harness  # noqa: E402  (the e2e harness is not a package)

warnings.filterwarnings("ignore", message=".*Assistants API is deprecated.*")

SPINDLE_KEY = "sk-bench"
CODE = "import time\nprint(6 * 7, time.time())"


@dataclass
class Burst:
    n: int
    first_exec_s: list[float] = field(default_factory=list)
    completed_s: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _code_call() -> dict[str, Any]:
    return {"tool_calls": [{"name": "python", "arguments": json.dumps({"code": CODE})}]}


def _wait_pool(base_url: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=10) as http:
        while True:
            sessions = http.get("/healthz").json()["sandbox_sessions"]
            if sessions and sessions["pooled"] >= sessions["pool_size"] and not sessions["starting"]:
                return dict(sessions)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the session pool did not fill: {sessions}")
            time.sleep(0.2)


def _one_burst(client: Any, upstream: harness.Upstream, assistant_id: str, n: int, tag: str) -> Burst:
    burst = Burst(n)
    threads = []
    for i in range(n):
        prompt = f"burst {tag} {n} {i}"
        upstream.script(prompt, [_code_call(), {"content": "42"}])
        threads.append(client.beta.threads.create(messages=[{"role": "user", "content": prompt}]).id)
    results: dict[str, Any] = {}
    ended: dict[str, float] = {}

    def go(thread_id: str) -> None:
        # Streamed, not polled: 32 clients polling would load the server they measure.
        try:
            run = None
            stream = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id, stream=True)
            for event in stream:
                if event.event.startswith("thread.run.") and not event.event.startswith("thread.run.step"):
                    run = event.data
            results[thread_id] = run
        except Exception as exc:  # a failed request is a failed thread, reported below
            results[thread_id] = exc
        ended[thread_id] = time.time()

    workers = [threading.Thread(target=go, args=(t,)) for t in threads]
    started = time.time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(600)
    for thread_id in threads:
        run = results.get(thread_id)
        if run is None or isinstance(run, Exception):
            burst.failed.append(f"{thread_id}: {run!r}")
            continue
        if run.status != "completed":
            burst.failed.append(f"{thread_id}: {run.status} {run.last_error}")
            continue
        steps = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id, order="asc").data
        logs = [
            o.logs
            for s in steps
            if s.type == "tool_calls"
            for c in s.step_details.tool_calls
            if c.type == "code_interpreter"
            for o in c.code_interpreter.outputs
            if o.type == "logs"
        ]
        try:
            answer, at = logs[0].split()
            assert answer == "42"
        except (IndexError, ValueError, AssertionError):
            burst.failed.append(f"{thread_id}: unexpected output {logs!r}")
            continue
        burst.first_exec_s.append(float(at) - started)
        burst.completed_s.append(ended[thread_id] - started)
    for thread_id in threads:  # ends their sessions: the next burst starts from the same state
        client.beta.threads.delete(thread_id)
    return burst


def run_bursts(sizes: list[int], fast_start: bool, pool: int, max_sessions: int) -> tuple[list[Burst], dict[str, Any]]:
    """One server per mode; the bursts run one after the other, each after the pool refilled."""
    sandbox_env = {k: v for k, v in os.environ.items() if k.startswith("SPINDLE_SANDBOX_")}
    env = {
        **sandbox_env,
        "SPINDLE_API_KEYS": SPINDLE_KEY,
        "SPINDLE_SANDBOX_FAST_START": "true" if fast_start else "false",
        "SPINDLE_SANDBOX_POOL_SIZE": str(pool),
        "SPINDLE_SANDBOX_MAX_SESSIONS": str(max_sessions),
        "SPINDLE_LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryDirectory(prefix="spindle-burst-") as tmp:
        upstream = harness.start_upstream(Path(tmp))
        try:
            server = harness.SpindleServer(Path(tmp) / "data", upstream=upstream, env=env).start(timeout=120)
            try:
                client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=SPINDLE_KEY, max_retries=0,
                                       timeout=600)
                assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
                bursts = []
                for n in sizes:
                    _wait_pool(server.base_url)
                    bursts.append(_one_burst(client, upstream, assistant.id, n, "fast" if fast_start else "fresh"))
                stats = _wait_pool(server.base_url)
                client.close()
                return bursts, stats
            finally:
                server.stop()
        finally:
            upstream.stop()
