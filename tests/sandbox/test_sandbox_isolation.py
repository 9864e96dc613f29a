"""Escape attempts from inside a real sandbox. Each one must fail, and the bystander session
(and this server process) must carry on.

These tests try for real: they open a listener on the host and try to reach it, plant
secrets in the server's environment and data dir and look for them, and so on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from spindle.sandbox import SessionManager
from tests.sandbox.helpers import FAKE_SECRET, LoopThread, Runner, assert_bystander_ok, sandbox_tag


def _outcome(runner: Runner, code: str) -> dict[str, object]:
    """Run ``code`` that prints one JSON object; return it."""
    return json.loads(runner.text(code).strip().splitlines()[-1])


def _host_addresses() -> list[str]:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    return [a for a in out if ":" not in a] or ["192.0.2.1"]


TRY_CONNECT = """
import json, socket
results = {}
for host, port in TARGETS:
    try:
        socket.create_connection((host, port), timeout=3).close()
        results[f"{host}:{port}"] = "connected"
    except OSError as exc:
        results[f"{host}:{port}"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(results))
"""


def test_no_route_to_the_hosts_loopback(session: Runner, bystander: Runner) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        results = _outcome(
            session, f"TARGETS = [('127.0.0.1', {port}), ('localhost', {port})]\n" + TRY_CONNECT
        )
        assert all(r.startswith("ConnectionRefusedError") for r in results.values()), results
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever arrived
    finally:
        listener.close()
    assert_bystander_ok(bystander)


def test_no_route_to_the_hosts_other_addresses_or_the_internet(session: Runner) -> None:
    targets = [(addr, 22) for addr in _host_addresses()] + [("1.1.1.1", 443), ("8.8.8.8", 53)]
    results = _outcome(session, f"TARGETS = {targets!r}\n" + TRY_CONNECT)
    assert not any(r == "connected" for r in results.values()), results
    assert all("unreachable" in r.lower() for r in results.values()), results
    dns = session.py("import socket\nsocket.getaddrinfo('pypi.org', 443)")
    assert dns.status == "error" and dns.outputs[-1].ename == "gaierror"


def test_no_abstract_unix_socket_of_the_host(session: Runner) -> None:
    name = "\0spindle-test-" + os.urandom(4).hex()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(1)
    try:
        result = session.py(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({name!r})")
        assert result.status == "error" and result.outputs[-1].ename == "ConnectionRefusedError"
    finally:
        listener.close()


def test_only_own_loopback_interface(session: Runner) -> None:
    names = session.text("import socket\nprint(sorted(n for _, n in socket.if_nameindex()))")
    assert names.strip() == "['lo']"


def test_cannot_read_server_data_dir_or_host_secrets(
    session: Runner, tmp_path: Path, bystander: Runner
) -> None:
    data_dir = tmp_path / "spindle-data"
    data_dir.mkdir()
    (data_dir / "spindle.sqlite3").write_text(FAKE_SECRET)
    paths = [
        str(data_dir / "spindle.sqlite3"),
        str(data_dir),
        "/etc/shadow",
        "/etc/gshadow",
        "/root",
        "/home",
        "/etc/ssh",
        "/work",
        "/var/lib",
        str(Path(__file__).resolve()),
    ]
    results = _outcome(
        session,
        f"""
import json, os
res = {{}}
for p in {paths!r}:
    try:
        res[p] = "listed" if os.path.isdir(p) and os.listdir(p) is not None else open(p).read()[:20]
    except OSError as exc:
        res[p] = type(exc).__name__
print(json.dumps(res))
""",
    )
    assert all(r in ("FileNotFoundError", "PermissionError") for r in results.values()), results
    etc = session.text("import os\nprint(sorted(os.listdir('/etc')))")
    assert "shadow" not in etc and "ssh" not in etc
    passwd = session.text("print(open('/etc/passwd').read())")
    assert "sandbox" in passwd and "postgres" not in passwd
    assert_bystander_ok(bystander)


def test_cannot_see_another_sessions_files(
    loop: LoopThread, manager: SessionManager, session: Runner
) -> None:
    other = Runner(loop, manager, "test/other-victim")
    try:
        other.text(f"open('/mnt/data/victim-{FAKE_SECRET}.txt', 'w').write('private')")
        found = session.text(f"""
import os
hits = []
for top in ['/mnt', '/tmp', '/run', '/opt', '/dev', '/etc', '/var']:
    for root, dirs, files in os.walk(top):
        hits += [os.path.join(root, f) for f in files if {FAKE_SECRET!r} in f]
print(hits, sorted(os.listdir('/mnt/data')), os.path.exists({'/run/' + sandbox_tag()!r}))
""")
        assert found.strip().startswith("[] [")
        assert "victim" not in found and found.strip().endswith("False")
    finally:
        other.release()


def test_cannot_see_host_processes(session: Runner) -> None:
    marker = "987.654321"
    sleeper = subprocess.Popen(["sleep", marker])
    try:
        out = _outcome(
            session,
            f"""
import json, os
pids = [p for p in os.listdir('/proc') if p.isdigit()]
cmds = []
for p in pids:
    try:
        cmds.append(open(f'/proc/{{p}}/cmdline').read())
    except OSError:
        pass
print(json.dumps({{"pids": len(pids), "marker": any({marker!r} in c for c in cmds), "init": cmds[0].split(chr(0))[0]}}))
""",
        )
        assert out["marker"] is False
        assert out["pids"] < 10, out  # bwrap's init, the kernel and its helpers only
        kill = session.py(f"import os\nos.kill({sleeper.pid}, 9)")
        assert kill.status == "error"  # no such process in the sandbox's PID namespace
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_environment_is_clean(session: Runner) -> None:
    out = session.text(f"""
import os
leaks = [k for k, v in os.environ.items() if {FAKE_SECRET!r} in v]
for p in [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        if {FAKE_SECRET!r}.encode() in open(f'/proc/{{p}}/environ', 'rb').read():
            leaks.append(p)
    except OSError:
        pass
print(leaks, 'SPINDLE_TEST_FAKE_SECRET' in os.environ, sorted(os.environ)[:3])
""")
    assert out.startswith("[] False")


def test_no_privileges(session: Runner) -> None:
    out = _outcome(
        session,
        """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(rc):
    return "ok" if rc == 0 else os.strerror(ctypes.get_errno())
res = {"uid": os.getuid(), "euid": os.geteuid()}
res["caps"] = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]
res["mount"] = errno_of(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
res["unshare_user"] = errno_of(libc.unshare(0x10000000))
res["unshare_net"] = errno_of(libc.unshare(0x40000000))
res["ptrace"] = errno_of(libc.ptrace(16, 1, 0, 0))
try:
    os.setuid(0); res["setuid"] = "ok"
except OSError as exc:
    res["setuid"] = exc.strerror
for path in ["/usr/bin/evil", "/opt/evil", "/evil", "/etc/evil"]:
    try:
        open(path, "w"); res[path] = "ok"
    except OSError as exc:
        res[path] = exc.strerror
print(json.dumps(res))
""",
    )
    assert out["uid"] == 1000 and out["euid"] == 1000
    assert out["caps"] == "0000000000000000"
    assert all(v != "ok" for k, v in out.items() if k not in ("uid", "euid", "caps")), out


def test_processes_run_as_an_unprivileged_host_uid(manager: SessionManager, session: Runner) -> None:
    session.text("x = 1")
    ts = manager.thread_session(session.key)
    assert ts is not None
    cgroup = ts.session.cgroup  # type: ignore[attr-defined]
    uids = ts.session.host_uids()  # type: ignore[attr-defined]
    if os.geteuid() == 0:
        assert uids and all(uid >= manager.settings.uid_base for uid in uids), uids
    else:  # rootless: an unprivileged user namespace maps only the server's own uid
        assert uids == {os.getuid()}, uids
    assert len(cgroup.pids()) >= 2


def test_symlink_to_host_file_is_not_exported(
    loop: LoopThread, manager: SessionManager, session: Runner
) -> None:
    session.text("import os\nos.symlink('/etc/shadow', '/mnt/data/shadow.txt')\nos.mkfifo('/mnt/data/pipe')")

    async def inspect() -> tuple[list[str], str]:
        async with manager.lease(session.key) as lease:
            names = [f.path for f in await lease.session.list_files()]
            try:
                await lease.session.read_file("shadow.txt", 1 << 20)
                outcome = "read"
            except (OSError, ValueError) as exc:
                outcome = type(exc).__name__
            return names, outcome

    names, outcome = loop.run(inspect())
    assert "shadow.txt" not in names and "pipe" not in names
    assert outcome != "read"


def test_put_file_never_follows_a_planted_link(
    loop: LoopThread, manager: SessionManager, session: Runner, tmp_path: Path
) -> None:
    target = tmp_path / "host-file"
    target.write_text("host")
    session.text(f"import os\nos.symlink({str(target)!r}, '/mnt/data/data.csv')")

    async def put() -> str:
        async with manager.lease(session.key) as lease:
            return await lease.session.put_file("data.csv", b"a,b\n1,2\n")

    name = loop.run(put())
    assert name == "data_1.csv"
    assert target.read_text() == "host"
    assert session.text("print(open('/mnt/data/data_1.csv').read())").startswith("a,b")
