"""What one session may have apart from the others (a container's): its own memory limit,
below the server's, and files removed from /mnt/data by the server without following any
link the sandbox planted. Real bubblewrap, cgroups and kernels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spindle.sandbox import ErrorOutput, SessionManager
from spindle.sandbox.limits.rlimits import SessionRlimits
from spindle.sandbox.limits.v1 import SessionCgroupV1
from spindle.sandbox.limits.v2 import SessionCgroupV2
from tests.sandbox.helpers import MEMORY_MB, LoopThread, Runner, assert_bystander_ok

_MIB = 1024 * 1024
_RLIMIT = "import resource; print(resource.getrlimit(resource.RLIMIT_DATA)[0])"


def _errors(result: Any) -> list[str]:
    return [o.ename for o in result.outputs if isinstance(o, ErrorOutput)]


def _limit(loop: LoopThread, manager: SessionManager, key: str, memory_bytes: int) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with manager.lease(key) as lease:
            return await manager.provider.limit_memory(lease.session, memory_bytes), lease.session  # type: ignore[attr-defined]

    return loop.run(go())


def _cgroup_limit(session: Any) -> int | None:
    cgroup = session.cgroup
    if isinstance(cgroup, SessionCgroupV1):
        return int((cgroup.paths["memory"] / "memory.limit_in_bytes").read_text())
    if isinstance(cgroup, SessionCgroupV2):
        return int((cgroup.path / "memory.max").read_text())
    assert isinstance(cgroup, SessionRlimits)
    return None  # no session-wide limit with the rlimits backend


def test_a_session_gets_a_memory_limit_of_its_own(loop: LoopThread, manager: SessionManager, session: Runner,
                                                   bystander: Runner) -> None:
    session.text("kept = 41")
    # (Not much lower: the kernel's preloaded modules take ~200 MiB of data segment; below
    # that, even formatting a traceback fails. Containers start at 1 GiB.)
    applied, live = _limit(loop, manager, session.key, 640 * _MIB)
    assert applied == 640 * _MIB
    assert session.text(_RLIMIT).strip() == str(640 * _MIB)  # every process of the session
    assert _cgroup_limit(live) in (640 * _MIB, None)  # and the session as a whole
    # 560 MiB more fits the server's limit (the bystander shows it) but not this session's.
    assert _errors(session.py("x = bytearray(560 * 1024**2)")) == ["MemoryError"]
    bystander.text("y = bytearray(560 * 1024**2)\ndel y")
    assert session.text("print(kept + 1)").strip() == "42"  # a MemoryError keeps the state
    # A kernel that dies is restarted with the session's limit, not the server's.
    restarted = session.py("import os; os._exit(1)")
    assert restarted.status == "restarted", restarted
    assert session.text(_RLIMIT).strip() == str(640 * _MIB)
    # Never above the server's limit.
    applied, live = _limit(loop, manager, session.key, 8 * MEMORY_MB * _MIB)
    assert applied == MEMORY_MB * _MIB
    assert session.text(_RLIMIT).strip() == str(MEMORY_MB * _MIB)
    assert _cgroup_limit(live) in (MEMORY_MB * _MIB, None)
    assert_bystander_ok(bystander)


def test_processes_over_the_session_limit_are_reported_with_it(loop: LoopThread, manager: SessionManager,
                                                               session: Runner, bystander: Runner) -> None:
    _applied, live = _limit(loop, manager, session.key, 640 * _MIB)
    if isinstance(live.cgroup, SessionRlimits):
        return  # rlimits: memory is per process only (the start-up line says so)
    # Each child stays under the per-process limit; together they exceed the session's (and
    # not the server's 1024 MiB). Each holds its memory until all have theirs (a fixed sleep
    # does not make them overlap where starting a process is slow: the cgroup-v2 guest).
    code = """
import subprocess, sys
child = ("import sys; x = bytearray(300 * 1024**2); x[::4096] = b'1' * len(x[::4096]); "
         "print('held', flush=True); sys.stdin.read()")
procs = [subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
         for _ in range(3)]
for p in procs:
    p.stdout.readline()  # b'' once a child is gone
for p in procs:
    p.stdin.close()
print([p.wait() for p in procs])
"""
    result = session.py(code, timeout=120)
    assert result.note and "640 MiB memory limit" in result.note, result
    assert_bystander_ok(bystander)


def test_deleting_a_file_never_follows_a_link(loop: LoopThread, manager: SessionManager, session: Runner,
                                               tmp_path: Path) -> None:
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "precious.txt").write_text("host data")
    os.chmod(tmp_path, 0o755)
    session.text(f"import os\nos.symlink({str(victim_dir)!r}, '/mnt/data/evil')\n"
                 f"os.symlink({str(victim_dir / 'precious.txt')!r}, '/mnt/data/link.txt')\n"
                 "os.makedirs('/mnt/data/sub', exist_ok=True)\nopen('/mnt/data/sub/plain.txt', 'w').write('x')")

    async def delete(path: str) -> bool:
        async with manager.lease(session.key) as lease:
            return await lease.session.delete_file(path)  # type: ignore[attr-defined,no-any-return]

    assert loop.run(delete("evil/precious.txt")) is False  # a link on the way: not followed
    assert loop.run(delete("link.txt")) is True  # the link itself goes ...
    assert (victim_dir / "precious.txt").read_text() == "host data"  # ... never its target
    assert loop.run(delete("sub/plain.txt")) is True
    assert loop.run(delete("sub/plain.txt")) is False  # nothing there any more
    assert loop.run(delete("sub")) is False  # a directory is not a file
    listing = session.text("import os\nprint(sorted(os.listdir('/mnt/data')), os.listdir('/mnt/data/sub'))")
    assert listing.strip() == "['evil', 'sub'] []"


def test_the_rlimits_backend_lowers_data_and_address_space(loop: LoopThread) -> None:
    """Without cgroups the limit is per process: RLIMIT_DATA and RLIMIT_AS (+ the headroom)."""
    from spindle.sandbox import build_provider
    from tests.sandbox.helpers import sandbox_settings

    settings = sandbox_settings(pool_size=0, limits="rlimits")

    async def go() -> tuple[str, str]:
        manager = SessionManager(build_provider(settings), settings)
        await manager.start()
        try:
            await manager.ready()
            async with manager.lease("test/rlimits") as lease:
                server_as = (await lease.execute(
                    "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])", timeout=20)).outputs
                await manager.provider.limit_memory(lease.session, 640 * _MIB)  # type: ignore[attr-defined]
                result = await lease.execute(
                    "import resource\nprint(resource.getrlimit(resource.RLIMIT_DATA)[0], "
                    "resource.getrlimit(resource.RLIMIT_AS)[0])\ntry:\n    x = bytearray(560 * 1024**2)\n"
                    "except MemoryError:\n    print('MemoryError')", timeout=20)
                return server_as[0].text, "".join(getattr(o, "text", "") for o in result.outputs)
        finally:
            await manager.shutdown()

    server_as, shown = loop.run(go())
    headroom = int(server_as) - MEMORY_MB * _MIB
    assert shown.split() == [str(640 * _MIB), str(640 * _MIB + headroom), "MemoryError"], shown


def test_a_kernel_that_does_not_lower_its_limit_is_replaced(loop: LoopThread, manager: SessionManager,
                                                            session: Runner, monkeypatch: Any) -> None:
    """The limit cell runs in the sandbox, where code could have broken ``resource``: if it
    does not end ok, the kernel is restarted by the launcher with the session's limit instead
    of running on with the server's."""
    from spindle.sandbox.local_session import LocalSession
    from spindle.sandbox.provider import ExecutionResult

    session.text("kept = 1")
    real_execute = LocalSession.execute
    refused: list[str] = []

    async def refuse_the_limit_cell(self: LocalSession, code: str, *args: Any, **kwargs: Any) -> Any:
        if "setrlimit" in code and not refused:
            refused.append(code)
            return ExecutionResult("error")  # as a kernel whose resource module was replaced
        return await real_execute(self, code, *args, **kwargs)

    monkeypatch.setattr(LocalSession, "execute", refuse_the_limit_cell)
    applied, _live = _limit(loop, manager, session.key, 640 * _MIB)
    monkeypatch.undo()
    assert refused and applied == 640 * _MIB
    assert session.text(_RLIMIT).strip() == str(640 * _MIB)  # the restarted kernel has it
    assert _errors(session.py("print(kept)")) == ["NameError"]  # it is a new kernel
