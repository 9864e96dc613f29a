"""Many processes (issue 11): throughput with 1, 2 and 3 processes behind nginx, the time for a
killed process's queued work to run elsewhere, and the latency added when the process serving
a stream is not the one executing the run.

Everything is real: throwaway PostgreSQL and S3 (moto) servers, the scripted upstream (instant
answers), ``spindle serve`` processes and nginx, started with the e2e harness.

(a) completed runs/s with ``--clients`` streaming clients (``POST /v1/threads/runs``,
    ``stream: true``) through nginx, for each process count (sandbox off: this is the run
    engine and the store, not code execution).
(b) ``kill -9`` takeover: three processes with ``SPINDLE_MAX_CONCURRENT_RUNS=1``; a run holds
    the victim's only slot (its model answer hangs) and a second run waits queued behind it;
    the victim is killed and the clock runs until another process has claimed the queued run
    (p50 over ``--trials``). The lease is ``--lease-s`` (the default setting is 15 s).
(c) cross-process streams: a thread's Code Interpreter session lives in process A; runs of
    that thread are streamed from A itself and from B (B's request is executed by A: affinity),
    alternating. Reported: time to ``thread.run.in_progress`` (the claim) and to the first text.

The client shares the machine's cores with every server: the figures include its cost.
Run with the main venv: ``.venv/bin/python bench/bench_processes.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (the e2e harness is not a package)
from bench_runs import measure_throughput  # noqa: E402

HEADERS = {"OpenAI-Beta": "assistants=v2"}
PROMPT = "bench processes: answer"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"


def _cluster(root: Path, upstream: harness.Upstream, processes: int, env: dict[str, str]) -> harness.SpindleServer:
    return harness.SpindleServer(root / "data", upstream=upstream, env=harness.backend_env("postgres+s3") | env,
                                 log_path=root / "spindle.log", processes=processes, balanced=True)


def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(url + path, json=body, headers=HEADERS, timeout=60)
    response.raise_for_status()
    return dict(response.json())


def _get(url: str, path: str) -> dict[str, Any]:
    response = httpx.get(url + path, headers=HEADERS, timeout=60)
    response.raise_for_status()
    return dict(response.json())


def throughput(root: Path, upstream: harness.Upstream, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in (1, 2, 3):
        cluster = _cluster(root / f"t{n}", upstream, n, {"SPINDLE_SANDBOX_ENABLED": "false"})
        try:
            cluster.start(timeout=300)
            assistant = _post(cluster.base_url, "/v1/assistants", {"model": "m"})
            body = {"assistant_id": assistant["id"], "stream": True,
                    "thread": {"messages": [{"role": "user", "content": PROMPT}]}}
            load = _load()
            result = asyncio.run(measure_throughput(cluster.base_url + "/v1/threads/runs", body, HEADERS,
                                                    "event: thread.run.completed", args.clients, args.total,
                                                    args.seconds))
            rows.append({"processes": n, "load": load, **result})
            print(f"  {n} process(es): {result['per_second']:.1f} runs/s (load before: {load})", flush=True)
        finally:
            cluster.stop()
    return rows


def takeover(root: Path, upstream: harness.Upstream, args: argparse.Namespace) -> list[float]:
    env = {"SPINDLE_SANDBOX_ENABLED": "false", "SPINDLE_MAX_CONCURRENT_RUNS": "1",
           "SPINDLE_RUN_LEASE_S": str(args.lease_s)}
    cluster = _cluster(root / "k", upstream, 3, env)
    times: list[float] = []
    try:
        cluster.start(timeout=300)
        upstream.script("hold the only slot", [{"content": "never ends", "hang": True}])
        assistant = _post(cluster.base_url, "/v1/assistants", {"model": "m"})
        for trial in range(args.trials):
            victim = trial % 3
            other = cluster.process_url((victim + 1) % 3)
            url = cluster.process_url(victim)
            hold = _post(url, "/v1/threads/runs", {"assistant_id": assistant["id"], "thread": {
                "messages": [{"role": "user", "content": "hold the only slot"}]}})
            _wait_status(other, f"/v1/threads/{hold['thread_id']}/runs/{hold['id']}", lambda s: s == "in_progress", 60)
            queued = _post(url, "/v1/threads/runs", {"assistant_id": assistant["id"], "thread": {
                "messages": [{"role": "user", "content": PROMPT}]}})
            path = f"/v1/threads/{queued['thread_id']}/runs/{queued['id']}"
            time.sleep(0.2)
            assert _get(other, path)["status"] == "queued"  # behind the hanging run
            cluster.kill9_one(victim)
            killed = time.monotonic()
            _wait_status(other, path, lambda s: s != "queued", args.lease_s * 4 + 30, step=0.02)
            times.append(time.monotonic() - killed)
            print(f"  trial {trial + 1}: queued run claimed elsewhere {times[-1]:.2f} s after kill -9", flush=True)
            cluster.start_process(victim, timeout=300)
    finally:
        cluster.stop()
    return times


def cross_stream(root: Path, upstream: harness.Upstream, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    cluster = _cluster(root / "s", upstream, 2, {"SPINDLE_SANDBOX_POOL_SIZE": "1"})
    samples: dict[str, dict[str, list[float]]] = {k: {"claim": [], "text": []} for k in ("same", "other")}
    try:
        cluster.start(timeout=300)
        a, b = cluster.process_url(0), cluster.process_url(1)
        upstream.script("open a session", [{"tool_calls": [{"name": "python", "arguments": json.dumps(
            {"code": "x = 1"})}]}, {"content": "ok"}])
        upstream.script(PROMPT, [{"content": "lorem ipsum dolor sit amet " * 4, "chunk_chars": 4}])
        assistant = _post(a, "/v1/assistants", {"model": "m", "tools": [{"type": "code_interpreter"}]})
        first = _post(a, "/v1/threads/runs", {"assistant_id": assistant["id"], "thread": {
            "messages": [{"role": "user", "content": "open a session"}]}})
        thread = first["thread_id"]
        _wait_status(a, f"/v1/threads/{thread}/runs/{first['id']}", lambda s: s == "completed", 120)
        for i in range(args.stream_runs * 2):
            kind, url = ("same", a) if i % 2 == 0 else ("other", b)
            _post(url, f"/v1/threads/{thread}/messages", {"role": "user", "content": PROMPT})
            claim, text = _stream(url + f"/v1/threads/{thread}/runs", {"assistant_id": assistant["id"], "stream": True})
            samples[kind]["claim"].append(claim)
            samples[kind]["text"].append(text)
    finally:
        cluster.stop()
    return {kind: {f"{what}_p50_ms": statistics.median(v) * 1000 for what, v in s.items()}
            for kind, s in samples.items()}


def _stream(url: str, body: dict[str, Any]) -> tuple[float, float]:
    start = time.perf_counter()
    claim = text = 0.0
    with httpx.stream("POST", url, json=body, headers=HEADERS, timeout=120) as response:
        response.raise_for_status()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "thread.run.in_progress" and not claim:
                    claim = time.perf_counter() - start
                elif event == "thread.message.delta" and not text:
                    text = time.perf_counter() - start
                elif event in ("thread.run.failed", "error"):
                    raise RuntimeError(f"run ended with {event}")
    return claim, text


def _wait_status(url: str, path: str, good: Any, timeout: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    status = "unknown"
    while time.monotonic() < deadline:
        status = _get(url, path)["status"]
        if good(status):
            return
        time.sleep(step)
    raise TimeoutError(f"{path} still {status} after {timeout:g} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--total", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--lease-s", type=float, default=15.0)
    parser.add_argument("--stream-runs", type=int, default=10, help="per side, for (c)")
    parser.add_argument("--only", choices=["throughput", "takeover", "streams"], action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    parts = args.only or ["throughput", "takeover", "streams"]
    report: dict[str, Any] = {"load_before": _load()}
    with tempfile.TemporaryDirectory(prefix="spindle-bench-processes-") as tmp:
        root = Path(tmp)
        upstream = harness.start_upstream(root)
        upstream.script(PROMPT, [{"content": "lorem ipsum " * 16, "chunk_chars": 4}])
        try:
            if "throughput" in parts:
                print(f"(a) throughput, {args.clients} streaming clients through nginx, {args.seconds:g} s each")
                report["throughput"] = throughput(root, upstream, args)
            if "takeover" in parts:
                print(f"(b) kill -9 takeover of queued work, lease {args.lease_s:g} s, {args.trials} trials")
                times = takeover(root, upstream, args)
                report["takeover_s"] = {"p50": statistics.median(times), "max": max(times), "all": times}
            if "streams" in parts:
                print(f"(c) streams served by the executing process vs another one, {args.stream_runs} runs each")
                report["streams"] = cross_stream(root, upstream, args)
        finally:
            upstream.stop()
    print("\nload average before:", report["load_before"], "after:", _load())
    if "throughput" in report:
        print(f"{'processes':>10}{'runs/s':>9}{'completed':>11}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}")
        for row in report["throughput"]:
            print(f"{row['processes']:>10}{row['per_second']:>9.1f}{int(row['completed']):>11}{int(row['failed']):>8}"
                  f"{row['p50_ms']:>9.0f}{row['p99_ms']:>9.0f}")
    if "takeover_s" in report:
        t = report["takeover_s"]
        print(f"kill -9 -> queued run claimed elsewhere: p50 {t['p50']:.2f} s, max {t['max']:.2f} s")
    if "streams" in report:
        for kind, s in report["streams"].items():
            print(f"stream from {kind:<5} process: claim p50 {s['claim_p50_ms']:.0f} ms, "
                  f"first text p50 {s['text_p50_ms']:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
