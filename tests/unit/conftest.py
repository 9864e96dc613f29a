"""In-process fixtures: the real app on a temporary data dir, the real SDK as client (its
httpx client is Starlette's TestClient), and the scripted upstream model on a thread."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from spindle.sandbox.settings import SandboxSettings
from tests.inprocess import AppFactory, app_factory
from tests.upstream.server import UpstreamHandle, start_in_thread

warnings.filterwarnings("ignore", category=DeprecationWarning, module="openai")


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamHandle]:
    _, handle = start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def _fresh_script(upstream: UpstreamHandle) -> None:
    upstream.reset()


@pytest.fixture
def make_app(tmp_path: Path, upstream: UpstreamHandle) -> Iterator[AppFactory]:
    """Start the app with settings overrides; every app started is closed at the end."""
    # The core tests need no sandbox; starting its kernel pool would only burn CPU.
    with app_factory(tmp_path / "data", upstream, sandbox=SandboxSettings(enabled=False)) as factory:
        yield factory


@pytest.fixture
def http(make_app: AppFactory) -> TestClient:
    return make_app()


@pytest.fixture
def client(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="sk-test", http_client=http, max_retries=0)


@pytest.fixture
def azure(http: TestClient) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint="http://testserver", api_key="sk-test",
                              api_version="2024-05-01-preview", http_client=http, max_retries=0)


def sse_events(text: str) -> list[tuple[str, str]]:
    """Parse an SSE body into (event, data) pairs; every frame must have an event line."""
    out = []
    for frame in text.strip().split("\n\n"):
        lines = frame.split("\n")
        assert lines[0].startswith("event: "), frame
        assert lines[1].startswith("data: "), frame
        out.append((lines[0][7:], lines[1][6:]))
    return out
