"""Sessions forked from the zygote: each still has its own namespaces, uid, cgroup, tmpfs and
seccomp filter, shares no writable memory with another, and behaves like a fresh kernel.

The isolation, limits and channel suites run on the same (zygote) manager; these tests check
that the sessions they ran against really were forked, and what only forking could break.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from spindle.sandbox import SessionManager
from spindle.sandbox.provider import ImageOutput
from spindle.sandbox.zygote import NAMESPACES
from tests.sandbox.helpers import Runner


def _session(manager: SessionManager, runner: Runner) -> Any:
    runner.text("pass")
    ts = manager.thread_session(runner.key)
    assert ts is not None
    return ts.session


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in fh)}


def _namespaces(pid: int | str) -> dict[str, str]:
    return {name: os.readlink(f"/proc/{pid}/ns/{name}") for name in NAMESPACES}


def _shared_writable(pid: int) -> set[str]:
    """Inodes of shared, writable mappings (``rw-s``) of a process."""
    found = set()
    with open(f"/proc/{pid}/maps", encoding="ascii", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 5 and fields[1].startswith("rw") and fields[1][3] == "s" and fields[4] != "0":
                found.add(f"{fields[3]}:{fields[4]}")
    return found


def test_sessions_are_forked_and_confined(manager: SessionManager, session: Runner) -> None:
    assert manager.provider.fast_start  # type: ignore[attr-defined]
    s = _session(manager, session)
    kernel = s._kernel
    assert kernel is not None, "the session was not forked from the zygote"
    assert kernel.pid in s.cgroup.pids()
    status = _status(kernel.pid)
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1", status
    assert set(status["Uid"].split()) == {str(s.uid)} and set(status["Gid"].split()) == {str(s.uid)}
    assert status["Groups"] == ""
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap], 16) == 0, (cap, status[cap])
    # The launcher's rlimits (a fresh session gets them from ``ulimit -c 0 -d``).
    with open(f"/proc/{kernel.pid}/limits", encoding="ascii") as fh:
        limits = {line[:26].strip(): line[26:].split()[:2] for line in fh}
    data = str(manager.settings.memory_mb * 1024 * 1024)
    assert limits["Max data size"] == [data, data] and limits["Max core file size"] == ["0", "0"], limits
    # The kernel's namespaces are those bubblewrap built for this session, none the host's.
    ns = _namespaces(kernel.pid)
    assert ns == _namespaces(kernel.waiter)
    host = _namespaces("self")
    assert all(ns[name] != host[name] for name in NAMESPACES), (ns, host)
    # Its own terminal session, and the zygote (not the host's init) reaps it.
    assert os.getsid(kernel.pid) == kernel.pid
    assert int(status["PPid"]) == manager.provider._zygote.pid()  # type: ignore[attr-defined]
    # From inside: same view as a fresh kernel's.
    inside = session.text(
        "import os, sys\n"
        "print(os.getuid(), os.getppid(), open('/proc/self/cgroup').read().strip())\n"
        "print(repr(open('/proc/self/cmdline','rb').read()))\n"
        "print(sorted(os.listdir('/proc/self/fd')))"
    ).splitlines()
    uid, ppid, cgroup = inside[0].split(" ", 2)
    # Its parent (the zygote, which reaps it) is outside its PID namespace.
    assert uid == "1000" and ppid == "0"
    assert all(line.endswith(":/") for line in cgroup.split()), cgroup  # its own cgroup namespace
    assert "/work" not in inside[1] and "spindle" not in inside[1].replace("spindle-zygote", "")


def test_two_forked_sessions_share_nothing_writable(manager: SessionManager, session: Runner, loop: Any) -> None:
    other = Runner(loop, manager, session.key + "-other")
    try:
        a, b = _session(manager, session), _session(manager, other)
        assert a._kernel and b._kernel
        assert a.uid != b.uid
        na, nb = _namespaces(a._kernel.pid), _namespaces(b._kernel.pid)
        assert all(na[name] != nb[name] for name in NAMESPACES)
        assert not (_shared_writable(a._kernel.pid) & _shared_writable(b._kernel.pid))
        # Module state inherited from the template is copy-on-write: a change stays in its session.
        session.text("import numpy\nnumpy._spindle_mark = 'a'\nnumpy.zeros(3)[0] = 1")
        assert other.text("import numpy\nprint(getattr(numpy, '_spindle_mark', None))").strip() == "None"
        # Each session got its own random state, not the template's.
        code = "import random, numpy\nprint(random.random(), numpy.random.rand())"
        assert session.text(code) != other.text(code)
    finally:
        other.release()


def test_forked_kernel_plots_and_restarts(manager: SessionManager, session: Runner) -> None:
    result = session.py("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nx = 41")
    assert result.status == "ok", result
    assert any(isinstance(o, ImageOutput) and o.data.startswith(b"\x89PNG") for o in result.outputs)
    assert session.text("print(x + 1)").strip() == "42"
    first = _session(manager, session)._kernel.pid
    result = session.py("import os\nos._exit(3)")
    assert result.status == "restarted", result
    after = session.py("print(globals().get('x'))")
    assert "".join(getattr(o, "text", "") for o in after.outputs).strip() == "None"
    kernel = _session(manager, session)._kernel
    assert kernel is not None and kernel.pid != first


def test_a_dead_zygote_is_restarted(manager: SessionManager, loop: Any) -> None:
    provider: Any = manager.provider
    old = provider._zygote.pid()
    assert len(os.listdir(f"/proc/{old}/task")) == 1  # no threads: it can fork safely
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while provider._zygote.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    runner = Runner(loop, manager, "test/after-zygote-death")
    try:
        # The pooled session (forked before) may serve this thread; the next start uses a new zygote.
        assert runner.text("print(6 * 7)").strip() == "42"
        second = Runner(loop, manager, "test/after-zygote-death-2")
        try:
            assert second.text("print(6 * 7)").strip() == "42"
            assert _session(manager, second)._kernel is not None
        finally:
            second.release()
        assert provider.fast_start and provider._zygote.pid() != old
    finally:
        runner.release()
