"""Shared fixtures: one settings object and one real embedder (MiniLM) for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spindle.retrieval.embedding import Embedder, get_embedder  # noqa: E402
from spindle.retrieval.index.store import StoreIndex  # noqa: E402
from spindle.retrieval.settings import RetrievalSettings  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> RetrievalSettings:
    return RetrievalSettings()


@pytest.fixture(scope="session")
def embedder(settings: RetrievalSettings) -> Embedder:
    return get_embedder(settings)


@pytest.fixture
def store(tmp_path: Path, settings: RetrievalSettings, embedder: Embedder) -> StoreIndex:
    index = StoreIndex(tmp_path / "vs_test", settings, embedder.identity, embedder.dimensions)
    yield index
    index.close()


# -- the real app (core factory) on a temporary data dir, driven by the real SDK -------------

import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import openai  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning, module="openai")


@pytest.fixture(scope="session")
def upstream() -> Iterator[Any]:
    from tests.upstream.server import start_in_thread

    _, handle = start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture
def make_app(tmp_path: Path, upstream: Any, embedder: Embedder,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    """Start the app (``data_dir`` under tmp_path unless given); all are closed at the end."""
    from spindle.sandbox.settings import SandboxSettings
    from tests.inprocess import app_factory

    upstream.reset()
    monkeypatch.setenv("SPINDLE_RETRIEVAL_TOOL_REWRITE", "false")  # tests opt in explicitly
    # No code_interpreter kernels are needed here.
    with app_factory(tmp_path / "data", upstream, sandbox=SandboxSettings(enabled=False),
                     poll_after_ms=50) as factory:
        yield factory


@pytest.fixture
def http(make_app: Callable[..., TestClient]) -> TestClient:
    return make_app()


@pytest.fixture
def client(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="sk-test", http_client=http, max_retries=0)


def upload(client: openai.OpenAI, name: str, data: bytes) -> str:
    import io

    buffer = io.BytesIO(data)
    buffer.name = name
    return client.files.create(file=buffer, purpose="assistants").id
