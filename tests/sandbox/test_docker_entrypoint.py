"""scripts/docker-entrypoint.sh, run for real on this machine: on a cgroup v2 root it moves
the container's processes into a leaf and enables the controllers for the server's session
cgroups; elsewhere it changes nothing; it then runs the server or the given command.

The cgroup steps are tried against a directory laid out like a cgroup v2 root (files record
what was written), a read-only tmpfs (the script remounts it, as in a container with
CAP_SYS_ADMIN), and a real cgroup v2 hierarchy when this host mounts one."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "docker-entrypoint.sh"


def _run(root: Path, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SPINDLE_ENTRYPOINT_CGROUP_ROOT": str(root), **(env or {})}
    return subprocess.run(["/bin/sh", str(SCRIPT), *command], env=full_env, capture_output=True, text=True,
                          timeout=60, check=False)


def _fake_v2_root(path: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    path.mkdir(exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.procs").write_text("101\n202\n")
    (path / "cgroup.subtree_control").write_text("")
    return path


def test_cgroup_v2_root_is_prepared_then_the_command_runs(tmp_path: Path) -> None:
    root = _fake_v2_root(tmp_path / "cg")
    result = _run(root, "echo", "ran")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran\n"
    assert set((root / "init" / "cgroup.procs").read_text().split()) == {"101", "202"}
    assert (root / "cgroup.subtree_control").read_text().split() == ["+cpu", "+memory", "+pids"]


def test_a_controller_missing_is_reported_and_the_rest_enabled(tmp_path: Path) -> None:
    root = _fake_v2_root(tmp_path / "cg", controllers="cpu pids")
    result = _run(root, "true")
    assert result.returncode == 0
    assert "the memory controller is not delegated" in result.stderr
    assert (root / "cgroup.subtree_control").read_text().split() == ["+cpu", "+pids"]


def test_not_cgroup_v2_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "v1"
    root.mkdir()
    result = _run(root, "echo", "ok")
    assert result.returncode == 0 and result.stdout == "ok\n" and result.stderr == ""
    assert list(root.iterdir()) == []


def test_a_failing_command_fails_the_container(tmp_path: Path) -> None:
    assert _run(tmp_path, "sh", "-c", "exit 7").returncode == 7


def test_serve_runs_the_server_with_the_container_defaults(tmp_path: Path) -> None:
    result = _run(tmp_path, "serve", "--help", env={"SPINDLE_ENTRYPOINT_PYTHON": sys.executable,
                                                     "PYTHONPATH": str(SCRIPT.parents[1])})
    assert result.returncode == 0, result.stderr
    assert "usage: spindle serve" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs in a new mount namespace (root)")
def test_a_read_only_cgroup_mount_is_remounted(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    # In a mount namespace of its own: a tmpfs laid out like a v2 root, made read-only, then
    # the entrypoint, which must remount it read-write to prepare it.
    inner = (
        f"mount -t tmpfs none {mnt} && printf 'cpu memory pids\\n' > {mnt}/cgroup.controllers && "
        f"printf '7\\n' > {mnt}/cgroup.procs && : > {mnt}/cgroup.subtree_control && "
        f"mount -o remount,ro {mnt} && ! touch {mnt}/probe 2>/dev/null && "
        f"SPINDLE_ENTRYPOINT_CGROUP_ROOT={mnt} /bin/sh {SCRIPT} "
        f"sh -c 'sort -u {mnt}/init/cgroup.procs; cat {mnt}/cgroup.subtree_control'"
    )
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", inner],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "+cpu", "+memory", "+pids"]


def _cgroup2_mount() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    return None


@pytest.mark.skipif(os.geteuid() != 0 or _cgroup2_mount() is None, reason="needs root and a cgroup v2 mount")
def test_processes_of_a_real_cgroup_v2_root_move_to_the_leaf() -> None:
    mount = _cgroup2_mount()
    assert mount is not None
    root = mount / f"spindle-entrypoint-test-{secrets.token_hex(4)}"
    root.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (root / "cgroup.procs").write_text(str(sleeper.pid))
        result = _run(root, "true")
        assert result.returncode == 0, result.stderr
        rel = "/" + str(root.relative_to(mount))
        deadline = time.monotonic() + 5
        while True:
            lines = Path(f"/proc/{sleeper.pid}/cgroup").read_text().splitlines()
            v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
            if v2 == [f"{rel}/init"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert v2 == [f"{rel}/init"], lines
        assert (root / "cgroup.procs").read_text() == ""
        # Controllers this host delegates (none on a hybrid v1 host) are enabled for the children.
        available = set((root / "cgroup.controllers").read_text().split()) & {"cpu", "memory", "pids"}
        assert set((root / "cgroup.subtree_control").read_text().split()) == available
    finally:
        sleeper.kill()
        sleeper.wait()
        for leaf in (root / "init", root):
            if leaf.exists():
                leaf.rmdir()
