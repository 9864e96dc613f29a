"""Hosts and modes: which limits backend runs, that its limits reach the session's processes,
that a backend named but missing refuses instead of weakening, and two servers on one host.

These run in whatever mode the host gives: cgroup v1 as root on the development machine;
cgroup v2 as root and rootless with a delegated subtree in the guest of
``scripts/test_cgroup_v2.sh``; rlimits with ``SPINDLE_SANDBOX_LIMITS=rlimits``.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spindle.sandbox import SandboxSettings, SandboxUnavailable, SessionFailed, SessionManager, build_provider
from spindle.sandbox.limits import CgroupV1, CgroupV2, RlimitsOnly
from spindle.sandbox.limits.v2 import find_v2_mount
from spindle.sandbox.local import BubblewrapProvider
from spindle.sandbox.uids import UidAllocator
from tests.sandbox.helpers import MEMORY_MB, PIDS_MAX, LoopThread, Runner, sandbox_env, sandbox_settings

REPO = Path(__file__).resolve().parents[2]
_MIB = 1024 * 1024


def _provider(manager: SessionManager) -> BubblewrapProvider:
    provider = manager.provider
    assert isinstance(provider, BubblewrapProvider) and provider.cgroups is not None
    return provider


def test_start_up_line_says_which_limits_hold(manager: SessionManager) -> None:
    provider = _provider(manager)
    backend = provider.cgroups.backend  # type: ignore[union-attr]
    line = provider.limits_line
    assert line.startswith(f"sandbox limits from {backend.name}: ")
    if isinstance(backend, CgroupV1):
        assert f"memory {MEMORY_MB} MiB" in line and "memory.limit_in_bytes" in line and "pids.max" in line
    elif isinstance(backend, CgroupV2):
        assert "memory.max" in line and "cpu.max" in line and f"processes {PIDS_MAX} (pids.max)" in line
    else:
        assert isinstance(backend, RlimitsOnly)
        assert "NOT enforced: memory per session" in line and "CPU rate" in line
    if os.geteuid() == 0:
        assert "a host uid of its own per session" in line
    else:
        assert "NOT enforced" in line and "every session runs as the server's uid" in line
        assert "disk space per session" in line


def _limits_of(pid: int) -> dict[str, str]:
    """Soft limits from /proc/PID/limits, by resource name."""
    found: dict[str, str] = {}
    for row in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft = row[:26].strip(), row[26:47].strip()
        found[name] = soft
    return found


def test_the_sessions_processes_carry_its_limits(manager: SessionManager, session: Runner) -> None:
    assert session.text("import os; print(os.getpid())").strip()
    ts = manager.thread_session(session.key)
    assert ts is not None
    limits_obj = ts.session.cgroup  # type: ignore[attr-defined]
    pids = limits_obj.pids()
    assert len(pids) >= 2  # bwrap and the kernel at least
    backend = _provider(manager).cgroups.backend  # type: ignore[union-attr]
    for pid in pids:
        limits = _limits_of(pid)
        assert limits["Max data size"] == str(MEMORY_MB * _MIB), limits
        assert limits["Max core file size"] == "0"
        if isinstance(backend, RlimitsOnly):
            assert limits["Max address space"] == str(MEMORY_MB * _MIB + 1024 * _MIB)
            assert limits["Max file size"] == str(manager.settings.disk_mb * _MIB)
            assert limits["Max processes"] != "unlimited"
        else:
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            if isinstance(backend, CgroupV2):
                # Exactly the session's cgroup: one line, 0::/<...>/<instance>/<session>
                rel = "0::/" + str(Path(limits_obj.join_files[0]).parent.relative_to(find_v2_mount() or "/"))
                assert rel.replace("0::/.", "0::/") in cgroups.splitlines(), cgroups
            else:
                assert f"/{ts.session.id}\n" in cgroups  # type: ignore[attr-defined]


FORK_UNTIL_REFUSED = """
import os, time
children = []
try:
    for _ in range(10 * %d):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    print('never refused', len(children))
except OSError as exc:
    print('refused', exc.errno, len(children))
finally:
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
"""


def test_the_process_limit_holds_and_is_reported(manager: SessionManager, session: Runner) -> None:
    # Unlike the fork bomb test, no time limit: a slow guest (user-mode Linux) forks slowly.
    backend = _provider(manager).cgroups.backend  # type: ignore[union-attr]
    # Rootless with rlimits the count is the uid's, with room for every session: fork past it.
    bound = (
        backend._nproc(_provider(manager).limits) + 10 if isinstance(backend, RlimitsOnly) else 10 * PIDS_MAX
    )
    result = session.py(FORK_UNTIL_REFUSED.replace("10 * %d", str(bound)), timeout=120)
    assert result.status == "ok", result
    words = "".join(getattr(o, "text", "") for o in result.outputs).split()
    assert words[0] == "refused" and words[1] == "11", words  # EAGAIN
    if isinstance(backend, RlimitsOnly):
        assert int(words[2]) < backend._nproc(_provider(manager).limits)
    else:  # the kernel and its threads count too
        assert int(words[2]) < PIDS_MAX
        assert result.note and f"limit of {PIDS_MAX} processes" in result.note, result


def _unavailable_backend() -> str:
    """A limits backend this host cannot provide (the test below names it)."""
    mount = find_v2_mount()
    if mount is None or "memory" not in (mount / "cgroup.controllers").read_text():
        return "cgroup_v2"
    return "cgroup_v1"


def test_a_named_backend_that_is_missing_refuses_to_run_code(loop: LoopThread) -> None:
    kind = _unavailable_backend()
    settings = sandbox_settings(pool_size=0, limits=kind)

    async def scenario() -> str:
        provider = build_provider(settings)
        try:
            await provider.start()
        except SandboxUnavailable as exc:
            return str(exc)
        finally:
            await provider.shutdown()
        return "started"

    message = loop.run(scenario())
    assert message != "started"
    assert ("cgroup v2" if kind == "cgroup_v2" else "cgroup v1") in message, message


def test_uid_base_must_keep_the_range_below_2_31() -> None:
    # bubblewrap writes uid maps as signed ints: 2200000000 failed every session.
    with pytest.raises(ValidationError, match="uid_base"):
        SandboxSettings(uid_base=2_200_000_000)
    assert SandboxSettings(uid_base=2**31 - 1 - 65536).uid_base == 2**31 - 1 - 65536


def test_uid_locks_are_shared_by_servers_with_different_work_dirs(tmp_path: Path) -> None:
    # Two servers = two allocators on the host-wide lock dir; a range of 2 uids.
    first, second = UidAllocator(tmp_path, 3_000_000, count=2), UidAllocator(tmp_path, 3_000_000, count=2)
    first.setup()
    second.setup()
    taken = {first.acquire(), first.acquire()}
    assert taken == {3_000_000, 3_000_001}
    with pytest.raises(SessionFailed, match="no free sandbox uid"):
        second.acquire()
    first.release(3_000_001)
    assert second.acquire() == 3_000_001


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class _Server:
    """A sandbox server process (tests/sandbox/hosts_server.py)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "sandbox" / "hosts_server.py")],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.ready = self._read(180)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1)
            if ready:
                line = self.proc.stdout.readline()
                assert line, f"server exited with {self.proc.poll()}"
                return json.loads(line)
        raise AssertionError("the server did not answer in time")

    def run(self, key: str, code: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([key, code]) + "\n")
        self.proc.stdin.flush()
        return self._read(180)

    def stop(self) -> None:
        """EOF on stdin: the server shuts down cleanly (or is killed after a minute)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


MARK = "import os, socket; open('/mnt/data/mine.txt', 'w').write('{name}'); print(sorted(os.listdir('/mnt/data')))"


def test_two_servers_side_by_side_each_running_code() -> None:
    # Same settings for both, as two copies of one service would have: same work dir, cgroup
    # parent and uid range.
    env = {**os.environ, **sandbox_env("-two"), "PYTHONPATH": str(REPO)}
    servers = [_Server(env), _Server(env)]
    third: _Server | None = None
    try:
        a, b = servers
        assert a.ready["instance"] != b.ready["instance"]
        ra, rb = a.run("t1", MARK.format(name="a")), b.run("t1", MARK.format(name="b"))
        assert ra["status"] == rb["status"] == "ok", (ra, rb)
        assert ra["out"].strip() == rb["out"].strip() == "['mine.txt']"  # each sees only its own
        assert ra["root"] != rb["root"] and Path(ra["root"]).parent != Path(rb["root"]).parent
        assert set(ra["limits"]).isdisjoint(rb["limits"])
        assert set(ra["pids"]).isdisjoint(rb["pids"])
        if os.geteuid() == 0:
            assert ra["uid"] != rb["uid"]
        # One server dies (kill -9): the other keeps working, and the next one to start
        # removes what the dead one left (processes, directories, cgroups).
        a.proc.kill()
        a.stop()
        again = b.run("t1", "print(open('/mnt/data/mine.txt').read())")
        assert again["status"] == "ok" and again["out"].strip() == "b"
        third = _Server(env)
        assert not Path(ra["root"]).parent.exists()
        for path in ra["limits"]:
            assert not Path(path).parent.exists() or not Path(path).exists()
        # Each process is gone or a zombie; one still in its exit (a forked kernel's sandbox
        # dies with its zygote, and this host's init reaps slowly) gets a few seconds.
        deadline = time.monotonic() + 10
        alive = list(ra["pids"])
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _running(pid)]
            time.sleep(0.1)
        assert not alive, f"processes of the dead server still run: {alive}"
        rc = third.run("t2", MARK.format(name="c"))
        assert rc["status"] == "ok" and rc["out"].strip() == "['mine.txt']"
        assert Path(rb["root"]).exists()  # the live server's session was left alone
    finally:
        for server in [*servers, *([third] if third else [])]:
            server.stop()
