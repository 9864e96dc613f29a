"""Benchmark of the Code Interpreter sandbox (not a timed test). Run as root:

    .venv/bin/python bench/bench_code_interpreter.py [--runs 30] [--pool 3]

Prints a table with:
  * first execution in a new thread with the pool warm (lease + ``print(1)``), p50 / p99, and
    the same through the tool (prepare with one file to copy in, call, output scan);
  * a warm execution's round trip in a sandboxed session vs the same code on a bare local
    ipykernel (same Python, no sandbox, TCP transport, same client code), and the ratio;
  * sessions created per second (cold start: sandbox, kernel, preload), sequentially;
  * memory per idle session (cgroup charge and summed RSS of its processes).
Targets: first execution <= 50 ms p50; warm round trip <= 1.5x the bare kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_client.connect import write_connection_file  # noqa: E402

from spindle.sandbox import SandboxSettings, SessionManager, build_provider  # noqa: E402
from spindle.sandbox.kernel import KernelChannel  # noqa: E402
from spindle.tools.base import RunContext, ToolCall  # noqa: E402
from spindle.tools.code_interpreter import CodeInterpreterTool  # noqa: E402

WARM_CODE = "x = sum(range(100))\nprint(x)"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_of(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


async def first_execution(manager: SessionManager, runs: int) -> list[float]:
    times: list[float] = []
    for i in range(runs):
        await manager.wait_pool_ready(300)
        key = f"bench/first-{i}"
        started = time.perf_counter()
        async with manager.lease(key) as lease:
            result = await lease.execute("print(1)", timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        assert result.status == "ok", result
        await manager.release(key)
    return times


class _Files:
    """Files kept in a dict: the bench measures the sandbox, not the blob store."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, object]] = {}
        self.blobs: dict[str, bytes] = {}

    async def get(self, project: str, file_id: str) -> dict[str, object]:
        return self.objects[file_id]

    async def read(self, project: str, file_id: str) -> bytes:
        return self.blobs[file_id]

    async def create(self, project: str, *, filename: str, data: bytes, purpose: str) -> dict[str, object]:
        file_id = f"file-{len(self.objects)}"
        self.objects[file_id] = {"id": file_id, "filename": filename, "bytes": len(data), "purpose": purpose}
        self.blobs[file_id] = data
        return self.objects[file_id]


async def first_execution_via_tool(manager: SessionManager, runs: int) -> list[float]:
    """What a run sees: the tool's prepare (lease, copy a CSV in) and call (run, scan outputs)."""
    files = _Files()
    await files.create("p", filename="data.csv", data=b"a,b\n1,2\n", purpose="assistants")
    runtime = SimpleNamespace(files=files, settings=SimpleNamespace(data_dir=Path("/nonexistent")))
    tool = CodeInterpreterTool(runtime, manager, manager.settings)  # type: ignore[arg-type]

    async def sink(delta: dict[str, object]) -> None:
        pass

    times: list[float] = []
    for i in range(runs):
        await manager.wait_pool_ready(300)
        thread_id = f"thread_bench_{i}"
        thread = {"id": thread_id, "tool_resources": {"code_interpreter": {"file_ids": ["file-0"]}}}
        ctx = RunContext(runtime=runtime, project="p", run={}, thread=thread, assistant={}, tools=[])  # type: ignore[arg-type]
        started = time.perf_counter()
        await tool.prepare(ctx)
        result = await tool.call(ctx, ToolCall("call_1", "python", json.dumps({"code": "print(1)"})), sink)
        times.append((time.perf_counter() - started) * 1000)
        assert result.output.strip() == "1", result.output
        await tool.on_thread_deleted("p", thread_id)
    return times


async def warm_round_trips(
    manager: SessionManager, python: str, runs: int
) -> tuple[list[float], list[float]]:
    """Interleave the sandboxed session and a bare kernel (same Python, no sandbox, TCP, same
    client code), so that load from elsewhere on the machine hits both alike."""
    import zmq.asyncio

    with tempfile.TemporaryDirectory() as tmp:
        conn_file, info = write_connection_file(
            str(Path(tmp) / "kernel.json"), transport="tcp", ip="127.0.0.1"
        )
        proc = subprocess.Popen(
            [
                python,
                "-m",
                "ipykernel_launcher",
                "-f",
                conn_file,
                "--HistoryManager.enabled=False",
                "--IPKernelApp.log_level=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        context = zmq.asyncio.Context()
        bare = KernelChannel(dict(info), context)
        try:
            await bare.wait_ready(60, lambda: proc.poll() is None)
            async with manager.lease("bench/warm") as lease:
                sandboxed_ms: list[float] = []
                bare_ms: list[float] = []
                for i in range(runs + 20):
                    started = time.perf_counter()
                    await lease.execute(WARM_CODE, timeout=30)
                    middle = time.perf_counter()
                    await bare.execute(WARM_CODE, timeout=30, grace=1, alive=lambda: True)
                    ended = time.perf_counter()
                    if i >= 20:  # warm-up
                        sandboxed_ms.append((middle - started) * 1000)
                        bare_ms.append((ended - middle) * 1000)
            await manager.release("bench/warm")
            return sandboxed_ms, bare_ms
        finally:
            bare.close()
            context.destroy(linger=0)
            proc.kill()
            proc.wait()


async def creation_and_memory(settings: SandboxSettings, count: int) -> tuple[float, float, float]:
    provider = build_provider(settings)
    await provider.start()
    sessions = []
    try:
        sessions.append(await provider.create_session())  # the start-up probe, already running
        started = time.perf_counter()
        for _ in range(count):
            sessions.append(await provider.create_session())
        elapsed = time.perf_counter() - started
        await asyncio.sleep(3)  # idle
        charged = [await s.memory_bytes() or 0 for s in sessions]
        rss = [rss_of(s.cgroup.pids()) for s in sessions]  # type: ignore[attr-defined]
        return count / elapsed, statistics.mean(charged) / 2**20, statistics.mean(rss) / 2**20
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
        await provider.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="new-thread first executions to time")
    parser.add_argument("--warm-runs", type=int, default=200, help="warm round trips to time")
    parser.add_argument("--pool", type=int, default=2, help="pool size")
    parser.add_argument("--create", type=int, default=5, help="sessions to create for the rate and memory")
    args = parser.parse_args()

    settings = SandboxSettings(
        work_dir=Path("/run/spindle-bench"),
        cgroup_parent="spindle-bench",
        uid_base=2_050_000_000,
        pool_size=args.pool,
        max_sessions=args.pool + args.create + 4,
    )
    manager = SessionManager(build_provider(settings), settings)
    await manager.start()
    await manager.ready()
    try:
        first = await first_execution(manager, args.runs)
        via_tool = await first_execution_via_tool(manager, args.runs)
        sandboxed, bare = await warm_round_trips(manager, str(settings.python), args.warm_runs)
    finally:
        await manager.shutdown()
    rate, charged_mb, rss_mb = await creation_and_memory(settings, args.create)

    ratio = statistics.median(sandboxed) / statistics.median(bare)
    rows = [
        ("new-thread first execution, pool warm, p50", f"{statistics.median(first):.1f} ms", "<= 50 ms"),
        ("new-thread first execution, pool warm, p99", f"{pct(first, 0.99):.1f} ms", ""),
        (
            "  same through the tool (prepare+call, 1 file in), p50",
            f"{statistics.median(via_tool):.1f} ms",
            "<= 50 ms",
        ),
        ("  same through the tool, p99", f"{pct(via_tool, 0.99):.1f} ms", ""),
        ("warm round trip, sandboxed (p50)", f"{statistics.median(sandboxed):.2f} ms", ""),
        ("warm round trip, bare local ipykernel (p50)", f"{statistics.median(bare):.2f} ms", ""),
        ("warm round trip ratio sandboxed / bare", f"{ratio:.2f}x", "<= 1.5x"),
        ("sessions created per second (cold, sequential)", f"{rate:.2f}/s", ""),
        ("memory per idle session (cgroup charge)", f"{charged_mb:.0f} MiB", ""),
        ("memory per idle session (RSS of its processes)", f"{rss_mb:.0f} MiB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':>12}  target")
    print("-" * (width + 24))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>12}  {target}")
    print(
        f"\n(first execution: {len(first)} runs; warm: {len(sandboxed)} runs each; preload: {settings.preload})"
    )


if __name__ == "__main__":
    asyncio.run(main())
