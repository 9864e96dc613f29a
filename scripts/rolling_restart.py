"""Rolling restart under load: every process restarted one at a time with SIGTERM while
clients stream runs through the balancer; prints what happened and exits 1 if any run failed.

Starts throwaway PostgreSQL + S3 servers, the scripted upstream (answers paced so a run
streams for about a second), N ``spindle serve`` processes behind nginx (the e2e harness's
topology) and ``--clients`` asyncio clients, each looping ``POST /v1/threads/runs`` with
``stream: true`` through nginx. After a warm-up, each process in turn gets SIGTERM (it stops
claiming, finishes its runs and streams, exits), is started again and must be ready before
the next one goes. A run counts as ok only if its stream ended with ``thread.run.completed``
and ``[DONE]``; anything else (an HTTP error, a cut stream, a failed run) is a failure.

    .venv/bin/python scripts/rolling_restart.py --processes 3 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import harness  # noqa: E402  (the e2e harness is not a package)

PROMPT = "rolling restart: stream me a paced answer"
ANSWER = "every word of this answer arrives while the processes restart one by one"


class Load:
    """Clients looping streamed runs; counts outcomes per phase."""

    def __init__(self, url: str, assistant_id: str, clients: int) -> None:
        self.url = url + "/v1/threads/runs"
        self.body = {"assistant_id": assistant_id, "stream": True,
                     "thread": {"messages": [{"role": "user", "content": PROMPT}]}}
        self.clients = clients
        self.phase = "warm-up"
        self.outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.stopping = False

    async def one(self, client: httpx.AsyncClient) -> str:
        event = ""
        completed = done = False
        try:
            async with client.stream("POST", self.url, json=self.body,
                                     headers={"OpenAI-Beta": "assistants=v2"}) as response:
                if response.status_code != 200:
                    body = (await response.aread())[:200].decode("utf-8", "replace")
                    return f"HTTP {response.status_code}: {body}"
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        if event in ("thread.run.failed", "thread.run.cancelled", "thread.run.expired",
                                     "thread.run.incomplete", "error"):
                            return f"stream event {event}"
                        completed = completed or event == "thread.run.completed"
                    elif line == "data: [DONE]":
                        done = True
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        if completed and done:
            return "ok"
        return f"stream ended after {event or 'nothing'}"

    async def worker(self, client: httpx.AsyncClient) -> None:
        while not self.stopping:
            phase = self.phase
            self.outcomes[phase][await self.one(client)] += 1

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients * 2)
        async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10), limits=limits) as client:
            await asyncio.gather(*(self.worker(client) for _ in range(self.clients)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--settle-s", type=float, default=5.0, help="load kept on after the last restart")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spindle-rolling-") as tmp:
        root = Path(tmp)
        upstream = harness.start_upstream(root)
        env = harness.backend_env("postgres+s3") | {"SPINDLE_SANDBOX_ENABLED": "false",
                                                    "SPINDLE_DRAIN_TIMEOUT_S": "30"}
        cluster = harness.SpindleServer(root / "data", upstream=upstream, env=env, log_path=root / "spindle.log",
                                        processes=args.processes, balanced=True)
        try:
            cluster.start(timeout=300)
            return drive(args, upstream, cluster)
        finally:
            cluster.stop()
            upstream.stop()


def drive(args: argparse.Namespace, upstream: harness.Upstream, cluster: harness.SpindleServer) -> int:
    upstream.script(PROMPT, [{"content": ANSWER, "chunk_chars": 4, "delay_ms": 50}])
    assistant = httpx.post(cluster.base_url + "/v1/assistants", json={"model": "m"},
                           headers={"OpenAI-Beta": "assistants=v2"}, timeout=30).json()
    load = Load(cluster.base_url, assistant["id"], args.clients)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(load.run(),), daemon=True)
    thread.start()
    started = time.monotonic()
    time.sleep(args.warmup_s)
    restarts: list[tuple[int, float]] = []
    for index in range(args.processes):
        load.phase = f"restarting p{index}"
        t0 = time.monotonic()
        cluster.restart_one(index, timeout=300)
        restarts.append((index, time.monotonic() - t0))
    load.phase = "after"
    time.sleep(args.settle_s)
    load.stopping = True
    thread.join(180)
    elapsed = time.monotonic() - started
    total = sum(sum(c.values()) for c in load.outcomes.values())
    failed = sum(n for c in load.outcomes.values() for outcome, n in c.items() if outcome != "ok")
    print(f"rolling restart of {args.processes} processes behind nginx, {args.clients} streaming clients, "
          f"{elapsed:.0f} s")
    print(f"{'phase':<16} {'ok':>6} {'failed':>7}")
    for phase, counts in load.outcomes.items():
        print(f"{phase:<16} {counts['ok']:>6} {sum(counts.values()) - counts['ok']:>7}")
    for index, seconds in restarts:
        print(f"  p{index}: SIGTERM -> exited -> ready again in {seconds:.1f} s")
    for phase, counts in load.outcomes.items():
        for outcome, n in counts.items():
            if outcome != "ok":
                print(f"  FAILED x{n} during {phase}: {outcome}")
    print(f"{total} runs, {failed} failed")
    return 1 if failed or not total else 0


if __name__ == "__main__":
    raise SystemExit(main())
