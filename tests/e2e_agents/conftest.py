"""Fixtures for the Azure AI Foundry Agents tier: a real Spindle server driven by the
``azure-ai-agents`` SDK (1.1.x), pointed at it the two ways its users do.

This tier runs under ``.venv-agents`` (scripts/run_e2e.sh), which holds only azure-ai-agents,
azure-core, pytest and httpx (and pydantic, for pyproject's warning filters); the servers are subprocesses started by ``tests/e2e/harness.py``.

Fixtures:
  upstream       session   harness.Upstream (the scripted chat-completions model)
  spindle_server session   harness.SpindleServer with keys: KEY → PROJECT, OTHER_KEY → OTHER_PROJECT
  endpoint_form  function  parametrized "projects" / "openai"
  agents_client  function  an AgentsClient on that form: "projects" is the documented
                           ``{server}/api/projects/{PROJECT}`` with a TokenCredential (Bearer);
                           "openai" is ``{server}/openai`` with the key in an ``api-key`` header
  make_client    function  factory make_client(form, key=KEY, auth="bearer"|"api-key", project=PROJECT)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# The process harness and sample documents are shared with the openai SDK tier.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import harness  # noqa: E402
from foundry import KEY, OTHER_KEY, OTHER_PROJECT, PROJECT, AgentsClient, new_client  # noqa: E402

_LOGS = pytest.StashKey[list[tuple[Any, int]]]()


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Upstream]:
    up = harness.start_upstream(tmp_path_factory.mktemp("upstream"))
    yield up
    up.stop()


@pytest.fixture(scope="session")
def spindle_server(upstream: harness.Upstream,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.SpindleServer]:
    root = tmp_path_factory.mktemp("spindle")
    env = {"SPINDLE_API_KEYS": f"{KEY}:{PROJECT},{OTHER_KEY}:{OTHER_PROJECT}", "SPINDLE_POLL_AFTER_MS": "50"}
    server = harness.start_server(upstream, root / "data", env=env, log_path=root / "spindle.log")
    yield server
    server.stop()


@pytest.fixture(params=["projects", "openai"])
def endpoint_form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_client(spindle_server: harness.SpindleServer) -> Iterator[Callable[..., AgentsClient]]:
    made: list[AgentsClient] = []

    def make(form: str, **kwargs: Any) -> AgentsClient:
        client = new_client(spindle_server.base_url, form, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def agents_client(endpoint_form: str, make_client: Callable[..., AgentsClient]) -> AgentsClient:
    return make_client(endpoint_form, auth="bearer" if endpoint_form == "projects" else "api-key")


@pytest.fixture(autouse=True)
def _hygiene(request: pytest.FixtureRequest) -> None:
    logs = request.node.stash.setdefault(_LOGS, [])
    if "upstream" in request.fixturenames:
        up: harness.Upstream = request.getfixturevalue("upstream")
        up.reset()
        logs.append((up.child, up.child.log_size()))
    if "spindle_server" in request.fixturenames:
        server: harness.SpindleServer = request.getfixturevalue("spindle_server")
        logs.append((server, server.log_size()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        for source, offset in item.stash.get(_LOGS, []):
            text = source.log_text(offset)
            if text.strip():
                name = "spindle server log" if isinstance(source, harness.SpindleServer) else f"{source.name} log"
                report.sections.append((f"{name} ({report.when})", text[-20_000:]))
    return report
