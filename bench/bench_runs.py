"""Core benchmark (issue 2 item 13): Spindle's overhead on a streamed run, and its throughput.

Starts the scripted upstream (instant mode: no delays) and a Spindle server as subprocesses,
with the e2e harness, then measures:

(a) latency, one request at a time: time to the first streamed text and to completion of
    ``POST /v1/threads/runs`` (stream) against the same upstream answer fetched directly with
    ``chat.completions.create(stream=True)``. The headline pair is raw httpx on both sides,
    because the SDK's own per-event parsing would otherwise be counted as "Spindle overhead"
    on one side only; the SDK-on-both-sides pair is printed as well. Modes are interleaved
    so machine noise hits all of them alike.
(b) throughput: completed runs per second with 32 concurrent streaming clients (asyncio +
    httpx), bounded by a run count and a time limit; the direct upstream rate is shown too.

The benchmark client shares the machine's cores with both servers, so all figures include
its cost. Run with the main venv: ``.venv/bin/python bench/bench_runs.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import harness  # noqa: E402  (the e2e harness is not a package; its folder is put on the path above)

# The SDK warns on every Assistants call; the benchmark measures that API on purpose.
warnings.filterwarnings("ignore", message=".*Assistants API is deprecated.*")

SPINDLE_KEY = "sk-bench"
PROMPT = "bench: tell me something"
_TERMINAL_FAILURES = (
    "thread.run.failed",
    "thread.run.cancelled",
    "thread.run.expired",
    "thread.run.incomplete",
    "error",
)


@dataclass
class Samples:
    """First-text and completion times (seconds) of one mode."""

    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


class Bench:
    def __init__(self, upstream: harness.Upstream, spindle: harness.SpindleServer, assistant_id: str) -> None:
        self.upstream = upstream
        self.spindle = spindle
        self.assistant_id = assistant_id
        self.http = httpx.Client(timeout=60)
        self.sdk_direct = openai.OpenAI(base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0)
        self.sdk_spindle = harness.make_client("openai", spindle.base_url, api_key=SPINDLE_KEY)
        self.chat_body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
        self.run_body = {
            "assistant_id": assistant_id,
            "thread": {"messages": [{"role": "user", "content": PROMPT}]},
            "stream": True,
        }

    def close(self) -> None:
        self.http.close()
        self.sdk_direct.close()
        self.sdk_spindle.close()

    def direct_raw(self) -> tuple[float, float]:
        start = time.perf_counter()
        ttft = done = 0.0
        headers = {"Authorization": f"Bearer {self.upstream.api_key}"}
        url = f"{self.upstream.base_url}/chat/completions"
        with self.http.stream("POST", url, json=self.chat_body, headers=headers) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not ttft and line.startswith("data: {") and _chunk_text(line[6:]):
                    ttft = time.perf_counter() - start
                elif line == "data: [DONE]":
                    done = time.perf_counter() - start
        return ttft, done

    def spindle_raw(self) -> tuple[float, float]:
        start = time.perf_counter()
        ttft = done = 0.0
        headers = {"Authorization": f"Bearer {SPINDLE_KEY}", "OpenAI-Beta": "assistants=v2"}
        url = f"{self.spindle.base_url}/v1/threads/runs"
        with self.http.stream("POST", url, json=self.run_body, headers=headers) as response:
            response.raise_for_status()
            event = ""
            # Read to the end (not break) so the keep-alive connection is reused, as a client would.
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    if event == "thread.run.completed":
                        done = time.perf_counter() - start
                    elif event in _TERMINAL_FAILURES:
                        raise RuntimeError(f"run ended with {event}")
                elif not ttft and event == "thread.message.delta" and line.startswith("data: "):
                    ttft = time.perf_counter() - start
        if not (ttft and done):
            raise RuntimeError("the run streamed no text or never completed")
        return ttft, done

    def direct_sdk(self) -> tuple[float, float]:
        start = time.perf_counter()
        ttft = 0.0
        stream = self.sdk_direct.chat.completions.create(
            model="m", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        for chunk in stream:
            if not ttft and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - start
        return ttft, time.perf_counter() - start

    def spindle_sdk(self) -> tuple[float, float]:
        start = time.perf_counter()
        ttft = 0.0
        stream = self.sdk_spindle.beta.threads.create_and_run(
            assistant_id=self.assistant_id,
            thread={"messages": [{"role": "user", "content": PROMPT}]},
            stream=True,
        )
        done = 0.0
        with stream:
            for event in stream:
                if not ttft and event.event == "thread.message.delta":
                    ttft = time.perf_counter() - start
                elif event.event == "thread.run.completed":
                    done = time.perf_counter() - start
                elif event.event in _TERMINAL_FAILURES:
                    raise RuntimeError(f"run ended with {event.event}")
        return ttft, done


def _chunk_text(data: str) -> str:
    choices = json.loads(data).get("choices") or [{}]
    return str(choices[0].get("delta", {}).get("content") or "")


def measure_latency(bench: Bench, iterations: int, warmup: int) -> dict[str, Samples]:
    modes: dict[str, Callable[[], tuple[float, float]]] = {
        "direct raw": bench.direct_raw,
        "spindle raw": bench.spindle_raw,
        "direct sdk": bench.direct_sdk,
        "spindle sdk": bench.spindle_sdk,
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


async def measure_throughput(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    done_marker: str,
    concurrency: int,
    total: int,
    seconds: float,
) -> dict[str, float]:
    """Runs per second with ``concurrency`` clients, until ``total`` runs or ``seconds`` pass."""
    latencies: list[float] = []
    failures = 0
    started = 0
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> bool:
            t0 = time.perf_counter()
            async with client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    return False
                finished = False
                async for line in response.aiter_lines():  # to the end: keeps the connection reusable
                    if line == done_marker:
                        latencies.append(time.perf_counter() - t0)
                        finished = True
            return finished

        async def worker() -> None:
            nonlocal failures, started
            while started < total and time.perf_counter() < deadline:
                started += 1
                try:
                    ok = await one()
                except httpx.HTTPError:
                    ok = False
                failures += not ok

        await asyncio.gather(*(one() for _ in range(min(concurrency, 8))))  # warm the connection pool
        latencies.clear()
        begin = time.perf_counter()
        deadline = begin + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - begin
    return {
        "completed": len(latencies),
        "failed": failures,
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": _pct(latencies, 50) * 1000,
        "p99_ms": _pct(latencies, 99) * 1000,
    }


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def print_report(
    samples: dict[str, Samples], throughput: dict[str, dict[str, float]], concurrency: int
) -> dict[str, Any]:
    ms = 1000.0
    print("\n(a) streamed latency, sequential (ms)")
    print(f"{'mode':<14}{'ttft p50':>10}{'ttft p99':>10}{'done p50':>10}{'done p99':>10}{'n':>6}")
    for name, s in samples.items():
        print(
            f"{name:<14}{_pct(s.ttft, 50) * ms:>10.2f}{_pct(s.ttft, 99) * ms:>10.2f}"
            f"{_pct(s.total, 50) * ms:>10.2f}{_pct(s.total, 99) * ms:>10.2f}{len(s.ttft):>6}"
        )
    summary: dict[str, Any] = {"latency_ms": {}, "throughput": throughput}
    print(f"\n{'spindle vs direct':<26}{'ttft p50':>10}{'ttft p99':>10}{'done p50':>10}{'done p99':>10}")
    for kind in ("raw", "sdk"):
        spindle, direct = samples[f"spindle {kind}"], samples[f"direct {kind}"]
        diffs, ratios = [], []
        for attr in ("ttft", "total"):
            for pct in (50, 99):
                a, b = _pct(getattr(spindle, attr), pct), _pct(getattr(direct, attr), pct)
                diffs.append((a - b) * ms)
                ratios.append(a / b)
                summary["latency_ms"][f"{kind}_{attr}_p{pct}"] = {"spindle": a * ms, "direct": b * ms}
        print(f"{kind + ' difference (ms)':<26}" + "".join(f"{d:>10.2f}" for d in diffs))
        print(f"{kind + ' ratio':<26}" + "".join(f"{r:>9.2f}x" for r in ratios))
    print(f"\n(b) throughput, {concurrency} concurrent streaming clients")
    print(
        f"{'target':<14}{'per second':>12}{'completed':>11}{'failed':>8}{'seconds':>9}{'p50 ms':>9}{'p99 ms':>9}"
    )
    for name, t in throughput.items():
        print(
            f"{name:<14}{t['per_second']:>12.1f}{int(t['completed']):>11}{int(t['failed']):>8}"
            f"{t['seconds']:>9.1f}{t['p50_ms']:>9.1f}{t['p99_ms']:>9.1f}"
        )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="measured requests per latency mode")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--reply-chars", type=int, default=200, help="length of the model's answer (4 chars per chunk)"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--total", type=int, default=3000, help="most runs in the throughput phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="longest throughput phase")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="spindle-bench-") as tmp:
        root = Path(tmp)
        upstream = harness.start_upstream(root)
        try:
            upstream.script(
                "bench:", [{"content": ("lorem ipsum " * 1000)[: args.reply_chars], "chunk_chars": 4}]
            )
            with harness.start_server(upstream, root / "data", log_path=root / "spindle.log") as spindle:
                return run(args, upstream, spindle)
        except harness.StartError as error:
            print(error, file=sys.stderr)
            return 1
        finally:
            upstream.stop()


def run(args: argparse.Namespace, upstream: harness.Upstream, spindle: harness.SpindleServer) -> int:
    headers = {"Authorization": f"Bearer {SPINDLE_KEY}", "OpenAI-Beta": "assistants=v2"}
    created = httpx.post(f"{spindle.base_url}/v1/assistants", json={"model": "m"}, headers=headers)
    created.raise_for_status()
    bench = Bench(upstream, spindle, created.json()["id"])
    # Other work on the machine skews every figure; say how busy it was.
    print(
        "load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), f"({os.cpu_count()} cores)"
    )
    try:
        print(
            f"latency: {args.iterations} requests per mode after {args.warmup} warm-up, reply {args.reply_chars} chars"
        )
        samples = measure_latency(bench, args.iterations, args.warmup)
    finally:
        bench.close()
    print(f"throughput: {args.concurrency} clients, up to {args.total} runs or {args.seconds:g}s per target")
    throughput = {
        "spindle runs": asyncio.run(
            measure_throughput(
                f"{spindle.base_url}/v1/threads/runs", bench.run_body, headers, "event: thread.run.completed",
                args.concurrency, args.total, args.seconds,
            )
        ),
        "direct chat": asyncio.run(
            measure_throughput(
                f"{upstream.base_url}/chat/completions", bench.chat_body,
                {"Authorization": f"Bearer {upstream.api_key}"}, "data: [DONE]",
                args.concurrency, args.total, args.seconds,
            )
        ),
    }  # fmt: skip
    summary = print_report(samples, throughput, args.concurrency)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
