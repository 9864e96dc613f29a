"""Fixtures for the sandbox tests: a real bubblewrap session manager on a background loop.

Everything here is real: bubblewrap, cgroups, tmpfs, ipykernel. One manager serves the whole
test session (kernel starts are the expensive part on a 2-core machine); its limits are small
so that bombs trip quickly. Tests submit coroutines to the manager's loop with ``run``.

The tests need root, bubblewrap and the sandbox Python of ``scripts/setup_sandbox.sh``; on a
host without them they are skipped with the reason the manager gives.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from spindle.sandbox import SessionManager, build_provider
from tests.sandbox.helpers import LoopThread, Runner, sandbox_settings, sandbox_unavailable


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def manager(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionManager]:
    data_dir = tmp_path_factory.mktemp("server-data")
    settings = sandbox_settings()

    async def start() -> SessionManager:
        mgr = SessionManager(build_provider(settings, protected_paths=[data_dir]), settings)
        await mgr.start()
        try:
            await mgr.ready()
        except Exception as exc:
            await mgr.shutdown()
            sandbox_unavailable(exc)
        return mgr

    mgr = loop.run(start())
    yield mgr
    loop.run(mgr.shutdown())


@pytest.fixture
def session(loop: LoopThread, manager: SessionManager) -> Iterator[Runner]:
    runner = Runner(loop, manager, "test/" + secrets.token_hex(4))
    yield runner
    runner.release()


@pytest.fixture(scope="session")
def bystander(loop: LoopThread, manager: SessionManager) -> Iterator[Runner]:
    """A session that must keep working while other sessions misbehave."""
    runner = Runner(loop, manager, "test/bystander")
    runner.text("import numpy as np\nsurvivor = np.arange(10).sum()")
    yield runner
    runner.release()
