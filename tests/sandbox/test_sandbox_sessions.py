"""Sessions doing real work: state, errors, figures, files, parallelism, lifetimes, refusal."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from spindle.sandbox import (
    ErrorOutput,
    ImageOutput,
    SandboxUnavailable,
    SessionManager,
    TextOutput,
    build_provider,
)
from tests.sandbox.helpers import LoopThread, Runner, sandbox_settings


def test_state_persists_across_calls(session: Runner) -> None:
    session.text("import math\nvalues = [1, 2, 3]\ndef double(x):\n    return 2 * x")
    assert session.text("values.append(4)\nprint(sum(map(double, values)), math.pi > 3)").strip() == "20 True"


def test_failing_call_then_working_one(session: Runner) -> None:
    failed = session.py("total = 10\nraise ValueError('bad input')")
    assert failed.status == "error"
    errors = [o for o in failed.outputs if isinstance(o, ErrorOutput)]
    assert errors[0].ename == "ValueError" and errors[0].evalue == "bad input"
    assert any("bad input" in line for line in errors[0].traceback)
    assert session.text("print(total * 2)").strip() == "20"
    syntax = session.py("def broken(:\n    pass")
    assert syntax.status == "error" and syntax.outputs[-1].ename == "SyntaxError"  # type: ignore[union-attr]
    assert session.text("print('recovered')").strip() == "recovered"


def test_result_and_streams(session: Runner) -> None:
    result = session.py("import sys\nprint('out')\nprint('err', file=sys.stderr)\n6 * 7")
    kinds = [(o.kind, o.text) for o in result.outputs if isinstance(o, TextOutput)]
    assert ("stdout", "out\n") in kinds and ("stderr", "err\n") in kinds and ("result", "42") in kinds


def _pngs(result: object) -> list[Image.Image]:
    images = [o for o in result.outputs if isinstance(o, ImageOutput)]  # type: ignore[attr-defined]
    assert all(o.mime == "image/png" and o.data.startswith(b"\x89PNG\r\n\x1a\n") for o in images)
    return [Image.open(io.BytesIO(o.data)) for o in images]


def test_figures_become_png_images(session: Runner) -> None:
    shown = session.py("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('shown')\nplt.show()")
    assert shown.status == "ok"
    [image] = _pngs(shown)
    image.load()
    assert image.width > 100 and image.height > 100
    left_open = session.py("fig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 5])")
    assert len(_pngs(left_open)) == 1
    two = session.py("plt.figure(); plt.plot([1]); plt.show()\nplt.figure(); plt.plot([2])")
    assert len(_pngs(two)) == 2
    saved = session.text(
        "plt.plot([1, 2]); plt.savefig('/mnt/data/chart.png'); plt.close('all')\n"
        "print(open('/mnt/data/chart.png', 'rb').read(4))"
    )
    assert "PNG" in saved


def test_csv_from_mnt_data(loop: LoopThread, manager: SessionManager, session: Runner) -> None:
    csv = b"region,amount\nnorth,10\nsouth,32\nnorth,5\n"

    async def upload() -> list[str]:
        async with manager.lease(session.key) as lease:
            first = await lease.session.put_file("sales data.csv", csv)
            second = await lease.session.put_file("sales data.csv", b"region,amount\neast,1\n")
            return [first, second]

    assert loop.run(upload()) == ["sales data.csv", "sales data_1.csv"]
    out = session.text(
        "import pandas as pd\ndf = pd.read_csv('/mnt/data/sales data.csv')\n"
        "print(df.groupby('region').amount.sum().to_dict(), len(pd.read_csv('sales data_1.csv')))"
    )
    assert out.strip() == "{'north': 15, 'south': 32} 1"


def test_two_sessions_run_in_parallel(loop: LoopThread, manager: SessionManager) -> None:
    a, b = Runner(loop, manager, "test/par-a"), Runner(loop, manager, "test/par-b")
    try:
        a.text("who = 'a'")
        b.text("who = 'b'")

        async def both() -> list[object]:
            async def one(key: str) -> object:
                async with manager.lease(key) as lease:
                    return await lease.session.execute("import time\ntime.sleep(1.5)\nprint(who)", timeout=20)

            return list(await asyncio.gather(one(a.key), one(b.key)))

        started = time.monotonic()
        results = loop.run(both())
        elapsed = time.monotonic() - started
        assert [r.outputs[0].text.strip() for r in results] == ["a", "b"]  # type: ignore[attr-defined]
        assert elapsed < 2.9, elapsed
    finally:
        a.release()
        b.release()


def test_cancelled_call_stops_the_code(loop: LoopThread, manager: SessionManager, session: Runner) -> None:
    session.text("progress = 0")

    async def cancel_then_run() -> tuple[float, object]:
        async with manager.lease(session.key) as lease:
            task = asyncio.ensure_future(
                lease.execute("import time\nfor progress in range(1, 300):\n    time.sleep(0.1)", timeout=60)
            )
            await asyncio.sleep(1.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            started = time.monotonic()
            result = await lease.execute("print(progress)", timeout=30)
            return time.monotonic() - started, result

    elapsed, result = loop.run(cancel_then_run())
    assert elapsed < 5, elapsed  # not queued behind the 30 s loop
    assert 0 < int(result.outputs[-1].text) < 100  # type: ignore[attr-defined]


def test_expired_session_is_replaced_and_reported(loop: LoopThread, manager: SessionManager) -> None:
    runner = Runner(loop, manager, "test/expiring")
    try:
        runner.text("secret_state = 1\nopen('/mnt/data/made.txt', 'w').write('x')")
        ts = manager.thread_session(runner.key)
        assert ts is not None
        ts.assigned_at -= manager.settings.session_lifetime_s + 1  # as if an hour had passed

        async def lease_again() -> tuple[bool, list[str]]:
            async with manager.lease(runner.key) as lease:
                return lease.reset, [f.path for f in await lease.session.list_files()]

        reset, files = loop.run(lease_again())
        assert reset is True and files == []
        assert runner.py("print(secret_state)").outputs[-1].ename == "NameError"
        # Reported once: the next lease is a normal one.
        assert loop.run(lease_again())[0] is False
    finally:
        runner.release()


def test_idle_sessions_are_reaped(loop: LoopThread, tmp_path: Path) -> None:
    settings = sandbox_settings(idle_timeout_s=1, pool_size=0, max_sessions=2)

    async def scenario() -> tuple[bool, bool]:
        mgr = SessionManager(build_provider(settings), settings)
        await mgr.start()
        try:
            async with mgr.lease("t/idle") as lease:
                await lease.execute("x = 1", timeout=30)
            await asyncio.sleep(2.5)  # reaper interval is 0.5 s with a 1 s idle timeout
            gone = mgr.thread_session("t/idle") is None
            async with mgr.lease("t/idle") as lease:
                return gone, lease.reset
        finally:
            await mgr.shutdown()

    assert loop.run(scenario(), timeout=180) == (True, True)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"bwrap_path": "/nonexistent/bwrap"}, "bubblewrap (/nonexistent/bwrap) not found"),
        ({"python": Path("/nonexistent/python")}, "sandbox Python /nonexistent/python not found"),
        ({"enabled": False}, "disabled"),
    ],
)
def test_refuses_to_run_without_a_sandbox(
    loop: LoopThread, overrides: dict[str, object], reason: str
) -> None:
    settings = sandbox_settings(**overrides)

    async def scenario() -> str:
        mgr = SessionManager(build_provider(settings), settings)
        await mgr.start()
        try:
            async with mgr.lease("t/refused"):
                return "ran"
        except SandboxUnavailable as exc:
            return str(exc)
        finally:
            await mgr.shutdown()

    message = loop.run(scenario())
    assert reason in message


def test_refuses_when_the_data_dir_would_be_mounted(loop: LoopThread) -> None:
    settings = sandbox_settings()
    inside_venv = settings.python.parent.parent / "data"

    async def scenario() -> str:
        mgr = SessionManager(build_provider(settings, protected_paths=[inside_venv]), settings)
        await mgr.start()
        try:
            await mgr.ready()
            return "ready"
        except SandboxUnavailable as exc:
            return str(exc)
        finally:
            await mgr.shutdown()

    assert "server data" in loop.run(scenario())


def test_pool_hands_out_ready_sessions_fast(loop: LoopThread, manager: SessionManager) -> None:
    assert loop.run(manager.wait_pool_ready(120), timeout=150)
    runner = Runner(loop, manager, "test/from-pool")
    try:
        started = time.monotonic()
        assert runner.text("print('warm')").strip() == "warm"
        assert time.monotonic() - started < 1.0  # a cold start takes seconds
    finally:
        runner.release()


def _running(pid: int) -> bool:
    """Not gone and not a zombie waiting for its parent (this process) to reap it."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_leftovers_of_a_crashed_server_are_removed(loop: LoopThread) -> None:
    settings = sandbox_settings(pool_size=0, max_sessions=2)

    async def scenario() -> tuple[list[int], bool, bool, list[int]]:
        crashed = build_provider(settings)
        await crashed.start()
        session = await crashed.create_session()  # the probe, handed out
        root, pids = session.root, session.cgroup.pids()  # type: ignore[attr-defined]
        os.close(crashed._lock_fd)  # type: ignore[attr-defined]  # as if its process had died
        crashed._lock_fd = None  # type: ignore[attr-defined]
        successor = build_provider(settings)
        await successor.start()
        try:
            alive = [pid for pid in pids if _running(pid)]
            return alive, root.exists(), os.path.ismount(root), session.cgroup.pids()  # type: ignore[attr-defined]
        finally:
            await successor.shutdown()
            await session.close()
            await crashed.shutdown()

    alive, root_exists, mounted, cgroup_pids = loop.run(scenario(), timeout=180)
    assert alive == [] and cgroup_pids == []
    assert not root_exists and not mounted


def test_the_data_stack_works_inside(session: Runner) -> None:
    out = session.text(
        """
import multiprocessing, io
import numpy as np, pandas as pd, scipy.stats, sympy, sklearn.linear_model
import openpyxl, docx, pptx, pypdf, PIL.Image, seaborn, statsmodels.api
x = sympy.symbols('x')
print(sympy.solve(3 * x + 11 - 14, x))
model = sklearn.linear_model.LinearRegression().fit(np.arange(10).reshape(-1, 1), np.arange(10) * 2.0)
print(round(float(model.coef_[0]), 3))
pd.DataFrame({'a': [1, 2]}).to_excel('/mnt/data/t.xlsx', index=False)
print(pd.read_excel('/mnt/data/t.xlsx').a.sum())
d = docx.Document(); d.add_paragraph('hi'); d.save('/mnt/data/t.docx')
print(docx.Document('/mnt/data/t.docx').paragraphs[0].text)
with multiprocessing.Pool(2) as pool:
    print(pool.map(abs, [-1, -2]))
""",
        timeout=90,
    )
    assert out.split("\n")[:5] == ["[1]", "2.0", "3", "hi", "[1, 2]"]
