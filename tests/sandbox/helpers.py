"""Helpers shared by the sandbox tests (imported by conftest and the test modules)."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from spindle.sandbox import SandboxSettings, SessionManager

T = TypeVar("T")

# Set before the sandbox starts: no sandbox process may ever see it.
FAKE_SECRET = "spindle-fake-secret-" + secrets.token_hex(8)
os.environ["SPINDLE_TEST_FAKE_SECRET"] = FAKE_SECRET

MEMORY_MB = 1024
PIDS_MAX = 64
DISK_MB = 48


class LoopThread:
    """An asyncio loop on its own thread, so sync tests can share async fixtures."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox-test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def sandbox_tag() -> str:
    return os.environ.get("SPINDLE_TEST_SANDBOX_TAG", "spindle-test")


def sandbox_uid_base() -> int:
    return int(os.environ.get("SPINDLE_TEST_SANDBOX_UID_BASE", "2000000000"))


def sandbox_work_dir(tag: str) -> Path:
    # SPINDLE_TEST_SANDBOX_WORK_DIR: rootless runs cannot write /run (scripts/run_rootless.sh).
    base = os.environ.get("SPINDLE_TEST_SANDBOX_WORK_DIR")
    return Path(base) / tag if base else Path("/run") / tag


def sandbox_env(suffix: str = "", uid_offset: int = 0) -> dict[str, str]:
    """The SPINDLE_SANDBOX_* variables a test server needs, apart from other runs (see sandbox_settings)."""
    tag = sandbox_tag() + suffix
    return {"SPINDLE_SANDBOX_WORK_DIR": str(sandbox_work_dir(tag)), "SPINDLE_SANDBOX_CGROUP_PARENT": tag,
            "SPINDLE_SANDBOX_UID_BASE": str(sandbox_uid_base() + uid_offset)}


def sandbox_settings(**overrides: Any) -> SandboxSettings:
    # SPINDLE_TEST_SANDBOX_TAG (a short name) and SPINDLE_TEST_SANDBOX_UID_BASE keep two
    # sandbox test runs on one machine apart: own work dir, cgroup parent and uid range.
    values: dict[str, Any] = {
        "work_dir": sandbox_work_dir(sandbox_tag()),
        "cgroup_parent": sandbox_tag(),
        "uid_base": sandbox_uid_base(),
        "pool_size": 1,
        "max_sessions": 10,
        "memory_mb": MEMORY_MB,
        "pids_max": PIDS_MAX,
        "disk_mb": DISK_MB,
        "call_timeout_s": 30,
        # The cgroup-v2 guest (every syscall through ptrace) sets more: an interrupt can take
        # longer than 2 s to land there when the host is busy.
        "interrupt_grace_s": float(os.environ.get("SPINDLE_TEST_SANDBOX_INTERRUPT_GRACE_S", "2")),
        "idle_timeout_s": 600,
    }
    values.update(overrides)
    return SandboxSettings(**values)


class Runner:
    """Run code in the session of a key: ``runner.py("print(1)")``."""

    def __init__(self, loop: LoopThread, manager: SessionManager, key: str) -> None:
        self.loop = loop
        self.manager = manager
        self.key = key

    def py(self, code: str, timeout: float = 30) -> Any:
        async def go() -> Any:
            async with self.manager.lease(self.key) as lease:
                return await lease.execute(code, timeout=timeout)

        return self.loop.run(go(), timeout=timeout + 60)

    def text(self, code: str, timeout: float = 30) -> str:
        """stdout + result text; fails the test if the code raised."""
        result = self.py(code, timeout)
        assert result.status == "ok", result
        return "".join(getattr(o, "text", "") for o in result.outputs)

    def release(self) -> None:
        self.loop.run(self.manager.release(self.key))


def assert_bystander_ok(bystander: Runner) -> None:
    assert bystander.text("print(survivor)").strip() == "45"


def sandbox_unavailable(exc: BaseException) -> None:
    """A host without the sandbox fails these tests (CI has one, and a skip would hide a broken
    sandbox); set SPINDLE_TEST_ALLOW_NO_SANDBOX=1 to skip them on a host that cannot have it."""
    import os

    import pytest

    if os.environ.get("SPINDLE_TEST_ALLOW_NO_SANDBOX") == "1":
        pytest.skip(f"sandbox unavailable here: {exc}")
    pytest.fail(f"sandbox unavailable: {exc} (SPINDLE_TEST_ALLOW_NO_SANDBOX=1 skips these tests)")
