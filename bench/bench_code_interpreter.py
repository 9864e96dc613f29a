"""Benchmark of the Code Interpreter sandbox (not a timed test). Run as root:

    .venv/bin/python bench/bench_code_interpreter.py [--runs 30] [--pool 3]

Prints a table with:
  * first execution in a new thread with the pool warm (lease + ``print(1)``), p50 / p99, and
    the same through the tool (prepare with one file to copy in, call, output scan);
  * a warm execution's round trip in a sandboxed session vs the same code on a bare local
    ipykernel (same Python, no sandbox, TCP transport, same client code), and the ratio;
  * per new session, for fast starts (forked from the zygote) and fresh interpreters:
    sessions created per second (sequentially), CPU-seconds (the session's cgroup plus what
    the server and the zygote spent), memory when idle (cgroup charge, RSS, and PSS summed
    over its processes from /proc/PID/smaps_rollup, so pages shared with the zygote or other
    sessions are counted once overall);
  * bursts of N = 1, 8, 32 new threads at once through the real server and the official SDK
    (``ci_burst.py``): time to each thread's first execution, p50 / p95 / max.
Targets: first execution <= 50 ms p50; warm round trip <= 1.5x the bare kernel; burst N=8
p95 <= 1.5 s; N=32 every thread served.

The machine's load (``os.getloadavg``) is printed with the table: timings are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_client.connect import write_connection_file  # noqa: E402

from spindle.sandbox import SandboxSettings, SessionManager, build_provider  # noqa: E402
from spindle.sandbox.kernel import KernelChannel  # noqa: E402
from spindle.tools.base import RunContext, ToolCall  # noqa: E402
from spindle.tools.code_interpreter import CodeInterpreterTool  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ci_burst  # noqa: E402

WARM_CODE = "x = sum(range(100))\nprint(x)"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def pss_of(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def session_cpu_s(session: object) -> float:
    """CPU time of a session's processes (and their reaped children), from /proc: a v1
    ``cpu`` cgroup has no usage counter when ``cpuacct`` is mounted apart, as on this host."""
    return sum(process_cpu_s(pid) for pid in getattr(session, "cgroup").pids())  # noqa: B009


def process_cpu_s(pid: int | None) -> float:
    """utime + stime of a process and its reaped children."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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


async def burst_in_process(manager: SessionManager, n: int) -> list[float]:
    """N new threads' first ``print(6*7)`` at once through the session manager alone (no HTTP,
    no run machinery): what the sandbox contributes to a burst. Seconds to each result."""
    await manager.wait_pool_ready(300)
    started = time.perf_counter()

    async def one(i: int) -> float:
        key = f"bench/burst-{n}-{i}"
        async with manager.lease(key) as lease:
            result = await lease.execute("print(6 * 7)", timeout=120)
        assert result.status == "ok", result
        return time.perf_counter() - started

    try:
        return list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        for i in range(n):
            await manager.release(f"bench/burst-{n}-{i}")


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


@dataclass
class Creation:
    rate: float
    cpu_s: float
    charged_mb: float
    rss_mb: float
    pss_mb: float
    zygote_pss_mb: float


async def creation_and_memory(settings: SandboxSettings, count: int) -> Creation:
    provider: Any = build_provider(settings)
    await provider.start()
    sessions = []
    try:
        sessions.append(await provider.create_session())  # the start-up probe, already running
        zygote = provider._zygote.pid() if provider.fast_start else None
        server_before = resource.getrusage(resource.RUSAGE_SELF)
        zygote_before = process_cpu_s(zygote)
        started = time.perf_counter()
        for _ in range(count):
            sessions.append(await provider.create_session())
        elapsed = time.perf_counter() - started
        server_after = resource.getrusage(resource.RUSAGE_SELF)
        outside = (server_after.ru_utime + server_after.ru_stime - server_before.ru_utime - server_before.ru_stime
                   + process_cpu_s(zygote) - zygote_before)
        cpu = statistics.mean(session_cpu_s(s) for s in sessions[1:]) + outside / count
        await asyncio.sleep(3)  # idle
        charged = [await s.memory_bytes() or 0 for s in sessions]
        rss = [rss_of(s.cgroup.pids()) for s in sessions]
        pss = [pss_of(s.cgroup.pids()) for s in sessions]
        zygote_pss = pss_of([zygote]) if zygote else 0
        return Creation(count / elapsed, cpu, statistics.mean(charged) / 2**20, statistics.mean(rss) / 2**20,
                        statistics.mean(pss) / 2**20, zygote_pss / 2**20)
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
        await provider.shutdown()


def _row(name: str, value: str, target: str = "") -> tuple[str, str, str]:
    return name, value, target


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="new-thread first executions to time")
    parser.add_argument("--warm-runs", type=int, default=200, help="warm round trips to time")
    parser.add_argument("--pool", type=int, default=2, help="pool size")
    parser.add_argument("--create", type=int, default=5, help="sessions to create for the rate and memory")
    parser.add_argument("--bursts", default="1,8,32", help="burst sizes through the real server ('' skips)")
    parser.add_argument("--fresh-bursts", default="8", help="burst sizes with fast starts off, for comparison")
    parser.add_argument("--skip-warm", action="store_true", help="only creation and bursts")
    args = parser.parse_args()

    # The SPINDLE_SANDBOX_* variables keep this run apart from a server (or another bench)
    # on the same machine; without them, bench-only names.
    os.environ.setdefault("SPINDLE_SANDBOX_WORK_DIR", "/run/spindle-bench")
    os.environ.setdefault("SPINDLE_SANDBOX_CGROUP_PARENT", "spindle-bench")
    os.environ.setdefault("SPINDLE_SANDBOX_UID_BASE", "2050000000")
    settings = SandboxSettings(pool_size=args.pool, max_sessions=args.pool + args.create + 4)
    rows: list[tuple[str, str, str]] = []
    loads = [os.getloadavg()[0]]
    if not args.skip_warm:
        manager = SessionManager(build_provider(settings), settings)
        await manager.start()
        await manager.ready()
        try:
            first = await first_execution(manager, args.runs)
            via_tool = await first_execution_via_tool(manager, args.runs)
            sandboxed, bare = await warm_round_trips(manager, str(settings.python), args.warm_runs)
        finally:
            await manager.shutdown()
        sizes = [int(n) for n in args.bursts.split(",") if n.strip()]
        for fast in (True, False) if sizes else ():
            burst_settings = settings.model_copy(update={"fast_start": fast, "max_sessions": max(32, *sizes)})
            manager = SessionManager(build_provider(burst_settings), burst_settings)
            await manager.start()
            await manager.ready()
            try:
                for n in sizes if fast else [8]:
                    times = await burst_in_process(manager, n)
                    mode = "fast start" if fast else "fresh interpreter"
                    rows.append(_row(f"[{mode}] in-process burst N={n} (manager only): p50 / p95 / max",
                                     f"{statistics.median(times):.2f} / {pct(times, 0.95):.2f} / {max(times):.2f} s"))
            finally:
                await manager.shutdown()
            loads.append(os.getloadavg()[0])
        ratio = statistics.median(sandboxed) / statistics.median(bare)
        rows += [
            _row("new-thread first execution, pool warm, p50", f"{statistics.median(first):.1f} ms", "<= 50 ms"),
            _row("new-thread first execution, pool warm, p99", f"{pct(first, 0.99):.1f} ms"),
            _row("  same through the tool (prepare+call, 1 file in), p50", f"{statistics.median(via_tool):.1f} ms",
                 "<= 50 ms"),
            _row("  same through the tool, p99", f"{pct(via_tool, 0.99):.1f} ms"),
            _row("warm round trip, sandboxed (p50)", f"{statistics.median(sandboxed):.2f} ms"),
            _row("warm round trip, bare local ipykernel (p50)", f"{statistics.median(bare):.2f} ms"),
            _row("warm round trip ratio sandboxed / bare", f"{ratio:.2f}x", "<= 1.5x"),
        ]
        loads.append(os.getloadavg()[0])
    for fast in (True, False):
        mode = "fast start" if fast else "fresh interpreter"
        c = await creation_and_memory(settings.model_copy(update={"fast_start": fast}), args.create)
        rows += [
            _row(f"[{mode}] sessions created per second (sequential)", f"{c.rate:.2f}/s"),
            _row(f"[{mode}] CPU-seconds per new session", f"{c.cpu_s:.2f} s"),
            _row(f"[{mode}] idle session: cgroup charge", f"{c.charged_mb:.0f} MiB"),
            _row(f"[{mode}] idle session: RSS of its processes", f"{c.rss_mb:.0f} MiB"),
            _row(f"[{mode}] idle session: PSS of its processes", f"{c.pss_mb:.0f} MiB"),
        ]
        if fast:
            rows.append(_row("[fast start] the zygote itself: PSS (once per server)", f"{c.zygote_pss_mb:.0f} MiB"))
        loads.append(os.getloadavg()[0])
    for fast, spec in ((True, args.bursts), (False, args.fresh_bursts)):
        sizes = [int(n) for n in spec.split(",") if n.strip()]
        if not sizes:
            continue
        mode = "fast start" if fast else "fresh interpreter"
        bursts, _stats = ci_burst.run_bursts(sizes, fast, args.pool, max(32, max(sizes)))
        for b in bursts:
            target = {8: "p95 <= 1.5 s", 32: "all served"}.get(b.n, "") if fast else ""
            if b.first_exec_s:
                value = (f"{statistics.median(b.first_exec_s):.2f} / {pct(b.first_exec_s, 0.95):.2f} / "
                         f"{max(b.first_exec_s):.2f} s")
            else:
                value = "none served"
            rows.append(_row(f"[{mode}] burst N={b.n}: first execution p50 / p95 / max", value, target))
            rows.append(_row(f"[{mode}] burst N={b.n}: run completed p50 / max; failed",
                             f"{statistics.median(b.completed_s or [0]):.2f} / {max(b.completed_s or [0]):.2f} s; "
                             f"{len(b.failed)}"))
            for failure in b.failed[:3]:
                print("failed:", failure)
        loads.append(os.getloadavg()[0])
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':>{vwidth}}  target")
    print("-" * (width + vwidth + 16))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {target}")
    print(f"\n(first execution: {args.runs} runs; warm: {args.warm_runs} runs each; preload: {settings.preload}; "
          f"pool {args.pool}; {os.cpu_count()} CPUs; 1-min load at each phase: "
          f"{', '.join(f'{x:.2f}' for x in loads)})")


if __name__ == "__main__":
    asyncio.run(main())
