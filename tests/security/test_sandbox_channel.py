# ruff: noqa: F811  (the sandbox tier's fixtures are imported by name, and test arguments reuse it)
"""The model's code against the server: the kernel channel, output files, paths, capacity.

Every test runs real hostile code in the real bubblewrap sandbox (the session manager of
``tests.sandbox.conftest``, or the code_interpreter tool on top of it) and checks what the
*server* does: its memory, what it stores, which paths it follows, what it tells the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle.sandbox import ImageOutput, SandboxCapacityError, SessionManager, TextOutput, build_provider
from spindle.sandbox.limits import CgroupV1, CgroupV2
from spindle.sandbox.local import BubblewrapProvider
from spindle.sandbox.local_session import LocalSession
from spindle.sandbox.settings import SandboxSettings
from spindle.tools.code_interpreter import CodeInterpreterTool
from tests.sandbox.conftest import bystander, loop, manager, session  # noqa: F401  (fixtures)
from tests.sandbox.helpers import DISK_MB, LoopThread, Runner, assert_bystander_ok, sandbox_settings
from tests.sandbox.test_ci_tool import FakeFiles, call, fake_runtime, make_ctx

_MIB = 1024 * 1024


def rss_bytes() -> int:
    """This process's resident memory, from the kernel (the manager runs in it)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples this process's RSS on a thread while the block runs."""

    def __init__(self) -> None:
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / _MIB


def texts(result: Any) -> str:
    return "".join(o.text for o in result.outputs if isinstance(o, TextOutput))


# -- A1: bounded sockets, iopub drained between calls ------------------------------------


FLOOD_AFTER_CELL = """
import threading, time
from ipykernel.kernelbase import Kernel
_k = Kernel.instance()
_parent = _k.get_parent()
_frame = b"x" * (100 * 1024 * 1024)  # one buffer, sent ten times without a copy
def _flood():
    time.sleep(0.5)  # after the cell has ended
    for _ in range(10):
        _k.session.send(_k.iopub_socket, "stream", {"name": "stdout", "text": ""}, parent=_parent, buffers=[_frame])
flooder = threading.Thread(target=_flood)
flooder.start()
print("started")
"""


def test_a1_iopub_flood_after_the_cell_does_not_grow_the_server(session: Runner, bystander: Runner) -> None:
    with PeakRss() as rss:
        assert session.text(FLOOD_AFTER_CELL).strip() == "started"
        time.sleep(8)  # the frames are sent meanwhile, between calls: nobody is reading them
        # The flood may wedge the attacker's own kernel (then it is restarted): never the server.
        for _ in range(3):
            result = session.py("print('still here')", timeout=10)
            if result.status == "ok" and texts(result).strip() == "still here":
                break
        else:
            pytest.fail(f"the session never recovered: {result}")
    # Ten 100 MiB frames: 1 GiB if the server queued them (as it did), nothing when bounded.
    assert rss.growth_mb < 300, f"server RSS grew by {rss.growth_mb:.0f} MiB"
    assert_bystander_ok(bystander)


OVERSIZED_DURING_CALL = """
from IPython.display import publish_display_data
print("before")
publish_display_data({"text/plain": "y" * (100 * 1024 * 1024)})
print("after")
"""


def test_a1_oversized_message_is_dropped_with_a_note(session: Runner) -> None:
    with PeakRss() as rss:
        result = session.py(OVERSIZED_DURING_CALL, timeout=60)
    assert result.status == "ok", result
    assert result.note is not None and "limit" in result.note and "dropped" in result.note, result.note
    assert not any(isinstance(o, TextOutput) and len(o.text) > _MIB for o in result.outputs)
    assert rss.growth_mb < 300, f"server RSS grew by {rss.growth_mb:.0f} MiB"
    assert session.text("print('next call works')").strip() == "next call works"


# -- A2: every field of every message is checked -------------------------------------------

HOSTILE_DISPLAYS = """
import sys
from IPython.display import publish_display_data
from ipykernel.kernelbase import Kernel
sys.set_int_max_str_digits(0)
k = Kernel.instance()
def send(msg_type, content):
    k.session.send(k.iopub_socket, msg_type, content, parent=k.get_parent())
publish_display_data({"image/png": 10**9})                      # an int: 1 GB of zeros once
publish_display_data({"image/png": "!!!! not base64 ????"})
publish_display_data({"image/png": {"a": 1}})
publish_display_data({"image/jpeg": ["x"] * 3})
send("error", {"ename": "E", "evalue": "v", "traceback": 5})
send("error", {"ename": ["E"], "evalue": "v", "traceback": []})
send("stream", {"name": "stdout", "text": {"not": "text"}})
send("display_data", {"data": {"text/plain": "n"}, "metadata": {"n": 10**5000}})
send("display_data", "not a dict")
send("execute_result", {"data": [1, 2], "execution_count": 1})
print("survived")
"""


def test_a2_malformed_kernel_messages_are_error_lines(session: Runner) -> None:
    with PeakRss() as rss:
        result = session.py(HOSTILE_DISPLAYS, timeout=60)
    # "error": the code sent error messages (the two readable fields of a bad one are kept).
    assert result.status in ("ok", "error") and result.note is None, result
    assert not any(isinstance(o, ImageOutput) for o in result.outputs), "a bogus image became an image"
    out = texts(result)
    assert "survived" in out
    assert out.count("[a malformed") >= 9, out
    assert rss.growth_mb < 300, f"server RSS grew by {rss.growth_mb:.0f} MiB"


BIG_IMAGE = """
import base64, os
from IPython.display import publish_display_data
publish_display_data({"image/png": base64.b64encode(os.urandom(%d)).decode()})
print("shown")
"""


@pytest.fixture(scope="module")
def small_limits(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionManager]:
    """A manager whose output-file (and so image and message) limit is 1 MiB."""
    settings = sandbox_settings(max_output_file_mb=1, pool_size=0, max_sessions=2)
    data_dir = tmp_path_factory.mktemp("small-limits")

    async def start() -> SessionManager:
        mgr = SessionManager(build_provider(settings, protected_paths=[data_dir]), settings)
        await mgr.start()
        await mgr.ready()
        return mgr

    mgr = loop.run(start())
    yield mgr
    loop.run(mgr.shutdown())


def test_a2_images_are_capped_like_output_files(loop: LoopThread, small_limits: SessionManager) -> None:
    runner = Runner(loop, small_limits, "test/images-" + secrets.token_hex(3))
    try:
        ok = runner.py(BIG_IMAGE % (512 * 1024))
        assert [len(o.data) for o in ok.outputs if isinstance(o, ImageOutput)] == [512 * 1024]
        over = runner.py(BIG_IMAGE % (3 * _MIB))  # passes the 8 MiB message limit, not the 1 MiB cap
        assert not any(isinstance(o, ImageOutput) for o in over.outputs)
        assert "limit for output files" in texts(over) and "shown" in texts(over)
        dropped = runner.py(BIG_IMAGE % (20 * _MIB))  # over the message limit: never read at all
        assert not any(isinstance(o, ImageOutput) for o in dropped.outputs)
        assert dropped.note is not None and "dropped" in dropped.note
    finally:
        runner.release()


# -- A3: the server never follows a path the sandbox can write --------------------------------

PLANT = """
import os
trap = %r
report = []
for name in sorted(os.listdir("/run/spindle")) + ["k-9", "extra"]:
    path = "/run/spindle/" + name
    try:
        if os.path.lexists(path):
            os.unlink(path)
        if name == "connection.json":
            os.mkdir(path)
        else:
            os.symlink(trap, path)
        report.append(name + ": planted")
    except OSError as exc:
        report.append(name + ": " + exc.strerror)
print(report, flush=True)
"""


def test_a3_planted_links_in_the_kernel_dir_are_never_followed(session: Runner, tmp_path: Path) -> None:
    trap_path = str(tmp_path / "host.sock")  # a host Unix socket the sandbox cannot even see
    trap = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    trap.bind(trap_path)
    trap.listen(64)
    trap.settimeout(0.1)
    connections = 0
    stop = threading.Event()

    def accept() -> None:
        nonlocal connections
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = trap.accept()
                connections += 1
                conn.close()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        session.text("x = 1")
        planted = session.py(PLANT % trap_path)
        assert planted.status == "ok", planted
        died = session.py("import os\nos._exit(1)")
        assert died.status == "restarted", died
        time.sleep(2.0)  # the old client reconnected through the links ~10 times a second
        assert connections == 0, f"the server connected {connections} times through a planted link"
        again = session.py("print('back')")
        assert again.status == "ok" and texts(again).strip() == "back", again
        # And once more, with the kernel dying right after planting (nothing left to stop it).
        session.py(PLANT % trap_path + "os._exit(1)\n")
        time.sleep(1.0)
        assert session.text("print('still back')").strip() == "still back"
        assert connections == 0
    finally:
        stop.set()
        acceptor.join()
        trap.close()


# -- A4: output file quotas, bounded model text, Files of a deleted thread -------------------


@pytest.fixture
def quota_tool(tmp_path: Path, manager: SessionManager) -> Any:
    runtime = fake_runtime(tmp_path)
    settings = manager.settings.model_copy(
        update={"max_output_call_mb": 2, "max_output_project_mb": 5, "max_output_chars": 3000}
    )
    return runtime, CodeInterpreterTool(runtime, manager, settings)


WRITE_FILES = """
import os
for i in range(%d):
    with open(f"/mnt/data/%s{i}.bin", "wb") as fh:
        fh.write(os.urandom(%d))
"""

SHOW_IMAGES = """
import base64, os
from IPython.display import publish_display_data
for _ in range(3):
    publish_display_data({"image/png": base64.b64encode(os.urandom(700 * 1024)).decode()})
"""


def test_a4_output_files_have_call_and_project_byte_quotas(quota_tool: Any, loop: LoopThread) -> None:
    runtime, tool = quota_tool
    files: FakeFiles = runtime.files
    ctx = make_ctx(runtime, "thread_" + secrets.token_hex(4))
    try:
        result, _ = call(loop, tool, ctx, WRITE_FILES % (5, "a", _MIB))
        stored = [o for o in files.objects.values() if o["purpose"] == "assistants_output"]
        assert len(stored) == 2, stored  # 2 MiB per call
        assert "reached its limit of 2 MiB" in result.output

        images, _ = call(loop, tool, ctx, SHOW_IMAGES)
        assert "2 images displayed" in images.output and "reached its limit" in images.output

        # The project now holds 2 + 1.4 MiB; another 2 MiB call may store at most 1.6 MiB more.
        third, _ = call(loop, tool, ctx, WRITE_FILES % (2, "b", _MIB))
        total = sum(o["bytes"] for o in files.objects.values() if o["purpose"] == "assistants_output")
        assert total <= 5 * _MIB, total
        assert "project's output files reached their limit of 5 MiB" in third.output
    finally:
        loop.run(tool.on_thread_deleted("proj", ctx.thread_id))


def test_a4_every_text_for_the_model_stays_within_max_output_chars(quota_tool: Any, loop: LoopThread) -> None:
    runtime, tool = quota_tool
    files: FakeFiles = runtime.files
    many = [files.add("input-" + "n" * 150 + f"-{i}.txt", b"x") for i in range(200)]
    ctx = make_ctx(runtime, "thread_" + secrets.token_hex(4), attachments=many)
    try:
        loop.run(tool.prepare(ctx))
        assert len(tool.instructions(ctx) or "") < 3000 + 1000
        result, _ = call(loop, tool, ctx, WRITE_FILES % (600, "o" * 120, 1) + "print('x' * 50000)")
        assert "not exported" in result.output
        assert len(result.output) <= 3000, len(result.output)
    finally:
        loop.run(tool.on_thread_deleted("proj", ctx.thread_id))


def test_a4_output_files_outlive_their_thread(quota_tool: Any, loop: LoopThread) -> None:
    """Decision (docs/sandbox.md): as at OpenAI, a thread's output Files stay Files when the
    thread is deleted (they count against the project quota until deleted)."""
    runtime, tool = quota_tool
    files: FakeFiles = runtime.files
    ctx = make_ctx(runtime, "thread_" + secrets.token_hex(4))
    result, _ = call(loop, tool, ctx, "open('/mnt/data/report.csv', 'w').write('a,b\\n1,2\\n')")
    [made] = [o for o in files.objects.values() if o["filename"] == "/mnt/data/report.csv"]
    loop.run(tool.on_thread_deleted("proj", ctx.thread_id))
    assert tool.manager.thread_session(f"proj/{ctx.thread_id}") is None
    assert files.blobs[made["id"]] == b"a,b\n1,2\n"


# -- A5: the session cap is exact; the total memory has a safe default ---------------------------


class CountingProvider(BubblewrapProvider):
    """The real provider, counting sessions from the start of their creation to their end."""

    live = 0
    peak = 0

    async def create_session(self) -> LocalSession:
        if self._spare is not None and self._spare.alive():
            return await super().create_session()  # the probe session, already counted
        # A session that fails to start is closed, which calls session_finished: counted out.
        CountingProvider.live += 1
        CountingProvider.peak = max(CountingProvider.peak, CountingProvider.live)
        return await super().create_session()

    def session_finished(self, ended: LocalSession) -> None:
        CountingProvider.live -= 1
        super().session_finished(ended)


def test_a5_max_sessions_is_exact_under_concurrency(loop: LoopThread, tmp_path: Path) -> None:
    settings = sandbox_settings(max_sessions=3, pool_size=0, preload="")
    CountingProvider.live = CountingProvider.peak = 0
    mgr = SessionManager(CountingProvider(settings, [tmp_path]), settings)

    async def scenario() -> list[object]:
        await mgr.start()
        await mgr.ready()
        for i in range(3):  # three idle threads fill the cap
            async with mgr.lease(f"cap/idle{i}"):
                pass

        async def new_thread(i: int) -> object:
            try:
                async with mgr.lease(f"cap/new{i}"):
                    await asyncio.sleep(0.3)
                return "ok"
            except SandboxCapacityError as exc:
                return exc

        try:
            return list(await asyncio.gather(*(new_thread(i) for i in range(8))))
        finally:
            await mgr.shutdown()

    outcomes = loop.run(scenario(), timeout=300)
    assert CountingProvider.peak <= 3, f"{CountingProvider.peak} sessions alive with a cap of 3"
    assert "ok" in outcomes
    assert CountingProvider.live == 0


def test_a5_total_memory_has_a_safe_default(manager: SessionManager) -> None:
    from spindle.sandbox.settings import machine_memory_bytes

    machine = machine_memory_bytes()
    default = SandboxSettings().total_memory_bytes()
    assert 0 < default < machine
    assert machine - default >= min(2048 * _MIB, machine // 4)
    assert SandboxSettings(total_memory_mb=-1).total_memory_bytes() == 0
    provider = manager.provider
    assert isinstance(provider, BubblewrapProvider)
    assert provider.cgroups is not None
    backend = provider.cgroups.backend
    if isinstance(backend, CgroupV1):
        parent = backend._parents["memory"]  # the parent of every session of the host
        assert int((parent / "memory.limit_in_bytes").read_text()) <= machine
    elif isinstance(backend, CgroupV2):
        assert backend._parent is not None
        assert int((backend._parent / "memory.max").read_text()) <= machine
    else:  # rlimits: no total, and the start-up line says so
        assert "NOT enforced: memory per session" in provider.limits_line


# -- A6: a full /mnt/data never wedges a thread --------------------------------------------------

FILL_DISK = """
import os
written = 0
try:
    with open('/mnt/data/filler.bin', 'wb') as fh:
        while True:
            fh.write(b'x' * (1024 * 1024)); fh.flush(); written += 1
except OSError as exc:
    print('disk full', exc.errno)
"""


def test_a6_full_disk_and_a_new_attachment_never_wedge_the_thread(
    tmp_path: Path,
    loop: LoopThread,
    manager: SessionManager,
) -> None:
    runtime = fake_runtime(tmp_path)
    tool = CodeInterpreterTool(runtime, manager, manager.settings)
    files: FakeFiles = runtime.files
    thread_id = "thread_" + secrets.token_hex(4)
    try:
        full, _ = call(loop, tool, make_ctx(runtime, thread_id), FILL_DISK)
        # ENOSPC from the session's tmpfs; rootless there is none, the file size limit stops it (EFBIG).
        provider = manager.provider
        assert isinstance(provider, BubblewrapProvider)
        assert f"disk full {28 if provider.root else 27}" in full.output
        attachment = files.add("data.csv", b"a,b\n" + b"1,2\n" * 200_000)  # 800 KB: no room left
        huge = files.add("huge.bin", b"")
        files.objects[huge]["bytes"] = (DISK_MB + 1) * _MIB  # can never fit: not even read
        for _ in range(2):  # run after run, the thread keeps working
            ctx = make_ctx(runtime, thread_id, attachments=[attachment, huge])
            loop.run(tool.prepare(ctx))
            assert "could not be copied" in (tool.instructions(ctx) or "")
            result, _ = call(loop, tool, ctx, "print('alive')")
            assert "alive" in result.output and "could not be copied" in result.output
        ctx = make_ctx(runtime, thread_id, attachments=[attachment])
        call(loop, tool, ctx, "import os; os.remove('/mnt/data/filler.bin')")
        ctx = make_ctx(runtime, thread_id, attachments=[attachment])  # the next run copies it
        loop.run(tool.prepare(ctx))
        result, _ = call(loop, tool, ctx, "print(len(open('/mnt/data/data.csv').read()))")
        assert result.output.strip() == str(4 + 4 * 200_000)
    finally:
        loop.run(tool.on_thread_deleted("proj", thread_id))


# -- A7: what the sandbox sees of the host -------------------------------------------------------

SURVEY = """
import glob, json, os
seen = {}
for path in glob.glob('/proc/[0-9]*/cmdline') + glob.glob('/proc/[0-9]*/environ') + ['/proc/self/mountinfo']:
    try:
        seen[path] = open(path, 'rb').read().decode(errors='replace')
    except OSError:
        pass
for fd in os.listdir('/proc/self/fd'):
    try:
        seen['fd' + fd] = os.readlink('/proc/self/fd/' + fd)
    except OSError:
        pass
shm, tmp = os.statvfs('/dev/shm'), os.statvfs('/tmp')
print(json.dumps({
    'seen': seen,
    'usr': sorted(os.listdir('/usr')),
    'shm_bytes': shm.f_blocks * shm.f_frsize,
    'shm_is_tmp': (shm.f_blocks, shm.f_files) == (tmp.f_blocks, tmp.f_files),
}))
"""


def test_a7_the_sandbox_sees_no_host_paths_pids_or_counters(session: Runner, manager: SessionManager) -> None:
    survey = json.loads(session.text(SURVEY))
    provider = manager.provider
    assert isinstance(provider, BubblewrapProvider)
    everything = "\n".join(survey["seen"].values())
    assert str(manager.settings.work_dir) not in everything
    if provider.root:
        assert provider.instance not in everything
    else:
        # Rootless there is no tmpfs per session: mountinfo names the bind mounts' sources
        # relative to the work dir's file system (a tmpfs), so the random instance and session
        # names show there, and only there (documented in docs/sandbox.md).
        assert all(provider.instance not in text for key, text in survey["seen"].items() if "mountinfo" not in key)
    assert f"i{os.getpid()}-" not in everything  # the old instance name carried the server's PID
    assert "/proc/1/cmdline" in survey["seen"] and "--args" in survey["seen"]["/proc/1/cmdline"]
    assert "local" not in survey["usr"] and "etc" not in survey["usr"] and "src" not in survey["usr"]
    if provider.root:  # rootless, /dev/shm and /tmp are directories of the work dir (no DISK_MB)
        assert survey["shm_is_tmp"] and survey["shm_bytes"] <= DISK_MB * _MIB
