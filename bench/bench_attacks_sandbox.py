"""The Code Interpreter attacks of the hardening issue (part A) against a real session manager,
each in a fresh child process; prints the child's peak RSS per attack (not a timed test).

    sudo .venv/bin/python bench/bench_attacks_sandbox.py [--only a1_flood,a3_plant]

Each attack runs in its own server-side process (the session manager, the provider, the
code_interpreter tool over an on-disk file service), so the peak is the attack's alone. The
parent reads ``VmHWM`` (peak resident set, the kernel's own accounting) from
``/proc/<child>/status`` once the sandbox is ready and again after the attack. Target: every
peak under 1.5 GB. Settings come from ``SPINDLE_SANDBOX_*`` variables; by default the bench uses
its own work dir, cgroup parent and uid range so that it never meets a server or the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spindle.sandbox import SandboxSettings, SessionManager, TextOutput  # noqa: E402
from spindle.sandbox.local import BubblewrapProvider  # noqa: E402
from spindle.sandbox.local_session import LocalSession  # noqa: E402
from spindle.tools.base import RunContext, ToolCall  # noqa: E402
from spindle.tools.code_interpreter import CodeInterpreterTool  # noqa: E402

_MIB = 1024 * 1024
TARGET_MB = 1536

FLOOD = """
import threading, time
from ipykernel.kernelbase import Kernel
_k = Kernel.instance()
_parent = _k.get_parent()
_frame = b"x" * (100 * 1024 * 1024)
def _flood():
    time.sleep(0.5)
    for _ in range(20):
        _k.session.send(_k.iopub_socket, "stream", {"name": "stdout", "text": ""}, parent=_parent, buffers=[_frame])
flooder = threading.Thread(target=_flood)
flooder.start()
"""

BIG_IN_CALL = """
from IPython.display import publish_display_data
for _ in range(20):
    publish_display_data({"text/plain": "y" * (80 * 1024 * 1024)})
"""

INT_IMAGE = 'from IPython.display import publish_display_data\npublish_display_data({"image/png": 10**9})'

REAL_PNG = """
import base64, os
from IPython.display import publish_display_data
publish_display_data({"image/png": base64.b64encode(b"\\x89PNG\\r\\n\\x1a\\n" + os.urandom(200 * 1024 * 1024)).decode()})
"""

PLANT = """
import os
for name in os.listdir("/run/spindle"):
    try:
        os.unlink("/run/spindle/" + name)
        if name == "connection.json":
            os.mkdir("/run/spindle/" + name)
        else:
            os.symlink("/run/systemd/private", "/run/spindle/" + name)
    except OSError:
        pass
os._exit(1)
"""

BIG_FILES = """
import glob, os
for old in glob.glob("/mnt/data/big*.bin"):
    os.remove(old)
block = os.urandom(1024 * 1024)
for i in range(14):
    with open(f"/mnt/data/big{secrets_suffix}{i}.bin", "wb") as fh:
        for _ in range(60):
            fh.write(block)
"""

MANY_FILES = """
import os
for i in range(4000):
    open(f"/mnt/data/{'n' * 150}-{i}.txt", "w").write("x")
"""

FILL_DISK = """
try:
    with open("/mnt/data/filler.bin", "wb") as fh:
        while True:
            fh.write(b"x" * (1024 * 1024)); fh.flush()
except OSError as exc:
    print("full", exc.errno)
"""

SURVEY = """
import glob
text = ""
for p in glob.glob("/proc/[0-9]*/cmdline"):
    text += open(p, "rb").read().decode(errors="replace")
print("host work dir shown:", "spindle-bench" in text)
"""


class DiskFiles:
    """Files on disk (bytes never stay in the server's memory), enough for the tool."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects: dict[str, dict[str, Any]] = {}

    @property
    def store(self) -> DiskFiles:
        return self

    async def scan(
        self, kind: str, where: dict[str, Any] | None = None, *, project: str | None = None
    ) -> list[Any]:
        return [o for o in self.objects.values() if all(o.get(k) == v for k, v in (where or {}).items())]

    def add(self, filename: str, data: bytes, purpose: str = "assistants") -> str:
        file_id = "file-" + secrets.token_hex(6)
        (self.root / file_id).write_bytes(data)
        self.objects[file_id] = {"id": file_id, "filename": filename, "bytes": len(data), "purpose": purpose}
        return file_id

    async def get(self, project: str, file_id: str) -> dict[str, Any]:
        return self.objects[file_id]

    async def read(self, project: str, file_id: str) -> bytes:
        return (self.root / file_id).read_bytes()

    async def create(self, project: str, *, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        return self.objects[self.add(filename, data, purpose)]


class CountingProvider(BubblewrapProvider):
    """Counts sessions from the start of their creation until they are torn down."""

    live = 0
    peak = 0

    async def create_session(self) -> LocalSession:
        if self._spare is not None and self._spare.alive():
            return await super().create_session()
        CountingProvider.live += 1
        CountingProvider.peak = max(CountingProvider.peak, CountingProvider.live)
        return await super().create_session()

    def session_finished(self, ended: LocalSession) -> None:
        CountingProvider.live -= 1
        super().session_finished(ended)


def bench_settings(**overrides: Any) -> SandboxSettings:
    defaults = {
        "work_dir": Path("/run/spindle-bench"),
        "cgroup_parent": "spindle-bench",
        "uid_base": 2_050_000_000,
        "pool_size": 1,
        "call_timeout_s": 60,
    }
    # Explicit SPINDLE_SANDBOX_* variables win over the bench's own defaults.
    values = {k: v for k, v in defaults.items() if f"SPINDLE_SANDBOX_{k.upper()}" not in os.environ}
    return SandboxSettings(**{**values, **overrides})


def context(runtime: Any, thread_id: str, attachments: list[str] = ()) -> RunContext:  # type: ignore[assignment]
    return RunContext(
        runtime=runtime,
        project="bench",
        run={"id": "run_bench"},
        thread={"id": thread_id},
        assistant={"id": "asst_bench"},
        tools=[{"type": "code_interpreter"}],
        attachment_file_ids={"code_interpreter": list(attachments)},
    )


async def tool_call(tool: CodeInterpreterTool, ctx: RunContext, code: str) -> str:
    async def sink(delta: dict[str, Any]) -> None:
        return None

    call = ToolCall("call_" + secrets.token_hex(4), "python", json.dumps({"code": code}))
    return (await tool.call(ctx, call, sink)).output


async def attack(name: str, manager: SessionManager, tool: CodeInterpreterTool, files: DiskFiles) -> str:
    """Run one attack; return a short description of what the server did."""
    key = f"bench/{name}"

    async def run(code: str, timeout: float = 60) -> Any:
        async with manager.lease(key) as lease:
            return await lease.execute(code, timeout=timeout)

    if name == "a1_flood":
        await run(FLOOD)
        await asyncio.sleep(10)  # twenty 100 MB frames sent between calls
        result = await run("print('after')", timeout=20)
        return f"next call: {result.status}"
    if name == "a1_big_in_call":
        result = await run(BIG_IN_CALL, timeout=120)
        return f"{result.status}; {len(result.outputs)} outputs kept"
    if name == "a2_int_image":
        result = await run(INT_IMAGE)
        return "; ".join(o.text.strip() for o in result.outputs if isinstance(o, TextOutput))[:60]
    if name == "a2_200mb_png":
        result = await run(REAL_PNG, timeout=120)
        return f"{result.status}; note: {(result.note or '')[:50]}"
    if name == "a3_plant":
        outcomes = []
        for _ in range(3):
            await run(PLANT)
            outcomes.append((await run("print('back')")).status)
        return "restarts: " + ",".join(outcomes)
    if name == "a4_output_files":
        ctx = context(tool.runtime, "thread_a4")
        outs = [await tool_call(tool, ctx, BIG_FILES.replace("{secrets_suffix}", str(i))) for i in range(2)]
        many = await tool_call(tool, ctx, MANY_FILES)
        stored = sum(o["bytes"] for o in files.objects.values()) / _MIB
        return f"stored {stored:.0f} MiB; model text {max(len(o) for o in [*outs, many])} chars"
    if name == "a5_45_threads":
        for i in range(manager.settings.max_sessions - manager.settings.pool_size):
            async with manager.lease(f"bench/idle{i}"):  # idle threads the new ones must evict
                pass

        async def new_thread(i: int) -> str:
            try:
                async with manager.lease(f"bench/thread{i}"):
                    await asyncio.sleep(0.5)
                return "ok"
            except Exception as exc:
                return type(exc).__name__

        outcomes = await asyncio.gather(*(new_thread(i) for i in range(45)))
        return f"peak live sessions {CountingProvider.peak}/{manager.settings.max_sessions}; ok {outcomes.count('ok')}"
    if name == "a6_full_disk":
        ctx = context(tool.runtime, "thread_a6")
        await tool_call(tool, ctx, FILL_DISK)
        attachment = files.add("data.bin", os.urandom(10 * _MIB))
        outcomes = []
        for _ in range(2):
            ctx = context(tool.runtime, "thread_a6", [attachment])
            await tool.prepare(ctx)
            outcomes.append("could not be copied" in await tool_call(tool, ctx, "print(1)"))
        return f"runs still work, told the model: {outcomes}"
    if name == "a7_survey":
        return (await run(SURVEY)).outputs[0].text.strip()
    raise SystemExit(f"unknown attack {name}")


ATTACKS = (
    "a1_flood",
    "a1_big_in_call",
    "a2_int_image",
    "a2_200mb_png",
    "a3_plant",
    "a4_output_files",
    "a5_45_threads",
    "a6_full_disk",
    "a7_survey",
)


async def child(name: str) -> None:
    overrides: dict[str, Any] = {}
    if name == "a5_45_threads":
        overrides = {"max_sessions": 32, "pool_size": 2, "preload": ""}
    settings = bench_settings(**overrides)
    with tempfile.TemporaryDirectory() as tmp:
        files = DiskFiles(Path(tmp))
        runtime = SimpleNamespace(settings=SimpleNamespace(data_dir=Path(tmp), sandbox=settings), files=files)
        manager = SessionManager(CountingProvider(settings, [Path(tmp)]), settings)
        tool = CodeInterpreterTool(runtime, manager, settings)  # type: ignore[arg-type]
        await manager.start()
        await manager.ready()
        await manager.wait_pool_ready(120)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        started = time.monotonic()
        try:
            outcome = await attack(name, manager, tool, files)
        except Exception as exc:  # the table shows it: an attack that breaks the server is a finding
            outcome = f"FAILED: {exc!r}"[:80]
        print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await manager.shutdown()


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--only", default="", help="comma-separated attack names")
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child))
        return
    names = [n for n in ATTACKS if not args.only or n in args.only.split(",")]
    rows = []
    for name in names:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise SystemExit(f"{name}: the sandbox did not start ({line!r})")
        ready = vm_hwm_mb(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        report = json.loads(proc.stdout.readline())
        peak = vm_hwm_mb(proc.pid)
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        proc.wait(timeout=120)
        rows.append((name, ready, peak, report["seconds"], report["outcome"]))
        print(f"  {name}: peak {peak:.0f} MiB", file=sys.stderr, flush=True)
    print(f"| attack | VmHWM ready (MiB) | VmHWM after attack (MiB) | under {TARGET_MB} MiB | s | outcome |")
    print("|---|---|---|---|---|---|")
    for name, ready, peak, seconds, outcome in rows:
        ok = "yes" if peak < TARGET_MB else "NO"
        print(f"| {name} | {ready:.0f} | {peak:.0f} | {ok} | {seconds:.1f} | {outcome} |")


if __name__ == "__main__":
    main()
