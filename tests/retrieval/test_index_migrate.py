"""``spindle migrate`` to PostgreSQL carries the vector stores' search indexes: a store built on
SQLite + the data dir is searched, after the move, from the PostgreSQL index by a server with
a different, empty data dir - with the same results as before."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import openai
import pytest

from spindle.sandbox.settings import SandboxSettings
from spindle.store.migrate import migrate
from tests.inprocess import app_factory
from tests.pgserver import PostgresServer

DOCS = {
    "walrus.txt": b"The walrus naps on the ice floe near Svalbard while gulls circle above.",
    "ferry.txt": b"The ferry to Tromso leaves at nine every morning, invoice INV-2026-0042.",
    "glacier.txt": b"The glacier retreated two kilometres in a decade, the survey says.",
}
QUERIES = ["where does the walrus sleep?", "INV-2026-0042", "how far did the glacier retreat"]


def _sdk(http: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="sk", http_client=http, max_retries=0)


def _search(client: openai.OpenAI, store_id: str) -> list[list[tuple[str, float]]]:
    return [[(hit.file_id, round(hit.score, 4)) for hit in client.vector_stores.search(
        vector_store_id=store_id, query=query).data] for query in QUERIES]


def test_migrate_copies_the_search_indexes(tmp_path: Path, upstream: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPINDLE_TEST_BACKENDS", raising=False)  # the source is SQLite + the data dir
    data = tmp_path / "data"
    with app_factory(data, upstream, sandbox=SandboxSettings(enabled=False)) as factory:
        client = _sdk(factory())
        ids = [client.files.create(file=(name, io.BytesIO(body)), purpose="assistants").id
               for name, body in DOCS.items()]
        store = client.vector_stores.create(name="moving")
        batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=ids,
                                                                  poll_interval_ms=20)
        assert batch.file_counts.completed == 3
        before = _search(client, store.id)
    assert [hits[0][0] for hits in before] == ids
    server = PostgresServer().start()
    try:
        url = server.create_database("moved")
        out: list[str] = []
        report = asyncio.run(migrate(data, "", url, None, None, out))
        assert report.problems == [], out
        assert "search indexes: 1 vector stores (3 files, 3 chunks) -> PostgreSQL" in out
        # A server on the database, with its own empty data dir and the bytes still local.
        with app_factory(tmp_path / "elsewhere", upstream, sandbox=SandboxSettings(enabled=False),
                         database_url=url) as factory:
            client = _sdk(factory())
            assert _search(client, store.id) == before
            assert not list((tmp_path / "elsewhere").glob("**/chunks.sqlite"))
    finally:
        server.stop()
