"""Responses benchmark (issue 12): Spindle's overhead on a streamed response, and throughput.

Same set-up and method as ``bench_runs.py`` (whose helpers it reuses): the scripted upstream in
instant mode and a Spindle server as subprocesses, then

(a) latency, one request at a time: time to the first ``response.output_text.delta`` and to
    ``response.completed`` of ``POST /v1/responses`` (stream) against the same answer fetched
    directly from the upstream's chat completions, raw httpx on both sides; a streamed run
    (``POST /v1/threads/runs``) is measured in the same rotation, so the two APIs' overheads
    are compared under the same load. Target: at most +15 ms p50 to first text.
(b) throughput: completed responses per second with 32 concurrent streaming clients, with
    the direct upstream rate beside it.

Run with the main venv: ``.venv/bin/python bench/bench_responses.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import harness  # noqa: E402  (the e2e harness is not a package)
from bench_runs import SPINDLE_KEY, Bench, Samples, _pct, measure_throughput  # noqa: E402

PROMPT = "bench: tell me something"
_HEADERS = {"Authorization": f"Bearer {SPINDLE_KEY}"}


def response_raw(http: httpx.Client, base_url: str) -> tuple[float, float]:
    body = {"model": "m", "input": PROMPT, "stream": True}
    start = time.perf_counter()
    ttft = done = 0.0
    with http.stream("POST", f"{base_url}/v1/responses", json=body, headers=_HEADERS) as response:
        response.raise_for_status()
        for line in response.iter_lines():  # to the end: the keep-alive connection is reused
            if line.startswith("event: "):
                event = line[7:]
                if not ttft and event == "response.output_text.delta":
                    ttft = time.perf_counter() - start
                elif event == "response.completed":
                    done = time.perf_counter() - start
                elif event in ("response.failed", "response.incomplete", "error"):
                    raise RuntimeError(f"response ended with {event}")
    if not (ttft and done):
        raise RuntimeError("the response streamed no text or never completed")
    return ttft, done


def measure_latency(bench: Bench, base_url: str, iterations: int, warmup: int) -> dict[str, Samples]:
    modes: dict[str, Callable[[], tuple[float, float]]] = {
        "direct raw": bench.direct_raw,
        "responses raw": lambda: response_raw(bench.http, base_url),
        "runs raw": bench.spindle_raw,
    }
    samples = {name: Samples() for name in modes}
    for i in range(warmup + iterations):
        order = list(modes.items())
        shift = i % len(order)  # rotate, so no mode always runs right after another
        for name, fn in order[shift:] + order[:shift]:
            ttft, total = fn()
            if i >= warmup:
                samples[name].ttft.append(ttft)
                samples[name].total.append(total)
    return samples


def report(samples: dict[str, Samples], throughput: dict[str, dict[str, float]], concurrency: int) -> dict[str, Any]:
    ms = 1000.0
    print("\n(a) streamed latency, sequential (ms)")
    print(f"{'mode':<15}{'ttft p50':>10}{'ttft p99':>10}{'done p50':>10}{'done p99':>10}{'n':>6}")
    for name, s in samples.items():
        print(f"{name:<15}{_pct(s.ttft, 50) * ms:>10.2f}{_pct(s.ttft, 99) * ms:>10.2f}"
              f"{_pct(s.total, 50) * ms:>10.2f}{_pct(s.total, 99) * ms:>10.2f}{len(s.ttft):>6}")
    direct = samples["direct raw"]
    summary: dict[str, Any] = {"overhead_ms": {}, "throughput": throughput}
    print(f"\n{'overhead vs direct (ms)':<26}{'ttft p50':>10}{'ttft p99':>10}{'done p50':>10}{'done p99':>10}")
    for name in ("responses raw", "runs raw"):
        row = []
        for attr in ("ttft", "total"):
            for pct in (50, 99):
                diff = (_pct(getattr(samples[name], attr), pct) - _pct(getattr(direct, attr), pct)) * ms
                row.append(diff)
                summary["overhead_ms"][f"{name}_{attr}_p{pct}"] = diff
        print(f"{name:<26}" + "".join(f"{d:>10.2f}" for d in row))
    print(f"\n(b) throughput, {concurrency} concurrent streaming clients")
    print(f"{'target':<16}{'per second':>12}{'completed':>11}{'failed':>8}{'seconds':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, t in throughput.items():
        print(f"{name:<16}{t['per_second']:>12.1f}{int(t['completed']):>11}{int(t['failed']):>8}"
              f"{t['seconds']:>9.1f}{t['p50_ms']:>9.1f}{t['p99_ms']:>9.1f}")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="measured requests per latency mode")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--reply-chars", type=int, default=200, help="length of the model's answer (4 chars per chunk)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--total", type=int, default=3000, help="most responses in the throughput phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="longest throughput phase")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spindle-bench-") as tmp:
        root = Path(tmp)
        upstream = harness.start_upstream(root)
        try:
            upstream.script("bench:", [{"content": ("lorem ipsum " * 1000)[: args.reply_chars], "chunk_chars": 4}])
            with harness.start_server(upstream, root / "data", log_path=root / "spindle.log") as spindle:
                return run(args, upstream, spindle)
        except harness.StartError as error:
            print(error, file=sys.stderr)
            return 1
        finally:
            upstream.stop()


def run(args: argparse.Namespace, upstream: harness.Upstream, spindle: harness.SpindleServer) -> int:
    headers = {**_HEADERS, "OpenAI-Beta": "assistants=v2"}
    created = httpx.post(f"{spindle.base_url}/v1/assistants", json={"model": "m"}, headers=headers)
    created.raise_for_status()
    bench = Bench(upstream, spindle, created.json()["id"])
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), f"({os.cpu_count()} cores)")
    try:
        print(f"latency: {args.iterations} requests per mode after {args.warmup} warm-up, reply {args.reply_chars} chars")
        samples = measure_latency(bench, spindle.base_url, args.iterations, args.warmup)
    finally:
        bench.close()
    print(f"throughput: {args.concurrency} clients, up to {args.total} responses or {args.seconds:g}s per target")
    throughput = {
        "spindle responses": asyncio.run(measure_throughput(
            f"{spindle.base_url}/v1/responses", {"model": "m", "input": PROMPT, "stream": True}, _HEADERS,
            "event: response.completed", args.concurrency, args.total, args.seconds)),
        "direct chat": asyncio.run(measure_throughput(
            f"{upstream.base_url}/chat/completions", bench.chat_body, {"Authorization": f"Bearer {upstream.api_key}"},
            "data: [DONE]", args.concurrency, args.total, args.seconds)),
    }
    summary = report(samples, throughput, args.concurrency)
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
