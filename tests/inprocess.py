"""What the in-process test tiers share: the real app on a temporary data dir, opened with
Starlette's TestClient (an httpx client, so the official SDK can use it directly)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from spindle.app import create_app
from spindle.sandbox.settings import SandboxSettings
from spindle.settings import ServerSettings, Settings
from tests.upstream.server import UpstreamHandle

AppFactory = Callable[..., TestClient]


@contextlib.contextmanager
def app_factory(data_dir: Path, upstream: UpstreamHandle, *, sandbox: SandboxSettings | None = None,
                **defaults: Any) -> Iterator[AppFactory]:
    """Yields ``factory(**server_overrides)``; every app it started is closed on exit.

    ``sandbox=None`` reads the sandbox settings from the environment."""
    opened: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        values: dict[str, Any] = {"data_dir": data_dir, "llm_base_url": upstream.base_url, **defaults, **overrides}
        settings = Settings(server=ServerSettings(**values), sandbox=sandbox or SandboxSettings())
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    try:
        yield factory
    finally:
        for client in reversed(opened):
            client.__exit__(None, None, None)
