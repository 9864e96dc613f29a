"""Fixtures for the end-to-end tier: a real Spindle server driven by the official SDK.

This tier runs under each SDK venv (scripts/run_e2e.sh): only openai, pytest and httpx are
importable here, so the servers are subprocesses (see harness.py).

Fixtures:
  upstream         session   harness.Upstream: .base_url, .script(match, replies), .requests(), .reset()
  spindle_server   session   harness.SpindleServer: .base_url, .port, .data_dir, .stop(), .kill9(), .restart()
                             Extra env by indirect parametrization:
                             @pytest.mark.parametrize("spindle_server", [{"SPINDLE_API_KEYS": "k1:p1"}], indirect=True)
  start_server     function  factory start_server(env=None, data_dir=None, *, with_upstream=True) -> SpindleServer,
                             stopped at the end of the test (for keys, crashes, other settings)
  openai_client    function  parametrized "openai" / "azure": OpenAI or AzureOpenAI pointed at spindle_server
  client_kind      function  "openai" or "azure", matching openai_client
  sdk_version      session   tuple of ints from openai.__version__

Markers: ``@pytest.mark.min_sdk(1, 21)`` / ``@pytest.mark.max_sdk(1, 20)`` skip a test outside
that SDK range (bounds inclusive); ``harness.requires_sdk(1, 40)`` is the decorator form.

Before each test the upstream's rules and request log are cleared, and a session server a
previous test stopped or killed is started again. When a test fails, the server log written
during it is attached to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

_LOGS = pytest.StashKey[list[tuple[harness.ChildProcess | harness.SpindleServer, int]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "min_sdk(*version): skip unless the openai SDK is at least this version"
    )
    config.addinivalue_line(
        "markers", "max_sdk(*version): skip unless the openai SDK is at most this version"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    version = harness.openai_version()
    shown = ".".join(map(str, version))
    for item in items:
        for mark in item.iter_markers("min_sdk"):
            if version < tuple(mark.args):
                item.add_marker(
                    pytest.mark.skip(reason=f"needs openai>={'.'.join(map(str, mark.args))}, have {shown}")
                )
        for mark in item.iter_markers("max_sdk"):
            if version[: len(mark.args)] > tuple(mark.args):
                item.add_marker(
                    pytest.mark.skip(reason=f"needs openai<={'.'.join(map(str, mark.args))}, have {shown}")
                )


@pytest.fixture(scope="session")
def sdk_version() -> tuple[int, ...]:
    return harness.openai_version()


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Upstream]:
    up = harness.start_upstream(tmp_path_factory.mktemp("upstream"))
    yield up
    up.stop()


@pytest.fixture(scope="session")
def spindle_server(
    request: pytest.FixtureRequest, upstream: harness.Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.SpindleServer]:
    env: dict[str, str] = getattr(request, "param", None) or {}
    root = tmp_path_factory.mktemp("spindle")
    server = harness.start_server(upstream, root / "data", env=env, log_path=root / "spindle.log")
    yield server
    server.stop()


@pytest.fixture
def start_server(
    request: pytest.FixtureRequest, upstream: harness.Upstream, tmp_path: Path
) -> Iterator[Callable[..., harness.SpindleServer]]:
    started: list[harness.SpindleServer] = []

    def start(
        env: dict[str, str] | None = None, data_dir: Path | None = None, *, with_upstream: bool = True
    ) -> harness.SpindleServer:
        root = tmp_path / f"spindle-{len(started)}"
        server = harness.SpindleServer(
            data_dir or root / "data",
            upstream=upstream if with_upstream else None,
            env=env,
            log_path=root / "spindle.log",
        )
        started.append(server)
        request.node.stash.setdefault(_LOGS, []).append((server, 0))
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(params=["openai", "azure"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def openai_client(client_kind: str, spindle_server: harness.SpindleServer) -> Iterator[Any]:
    client = harness.make_client(client_kind, spindle_server.base_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _e2e_hygiene(request: pytest.FixtureRequest) -> None:
    logs = request.node.stash.setdefault(_LOGS, [])
    if "upstream" in request.fixturenames:
        up: harness.Upstream = request.getfixturevalue("upstream")
        up.reset()
        logs.append((up.child, up.child.log_size()))
    if "spindle_server" in request.fixturenames:
        server: harness.SpindleServer = request.getfixturevalue("spindle_server")
        if not server.alive:
            server.restart()
        logs.append((server, server.log_size()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        for source, offset in item.stash.get(_LOGS, []):
            text = source.log_text(offset)
            if text.strip():
                name = (
                    "spindle server log"
                    if isinstance(source, harness.SpindleServer)
                    else f"{source.name} log"
                )
                report.sections.append((f"{name} ({report.when})", text[-20_000:]))
    return report
