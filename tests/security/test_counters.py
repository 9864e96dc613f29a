"""Vector store counters under racing writers: they are increments held by the store, so
files added, re-added and removed at once, while ingestion moves them, still add up."""

from __future__ import annotations

import time

import openai
from fastapi.testclient import TestClient

from tests.retrieval.conftest import client, embedder, http, make_app, settings, upload, upstream  # noqa: F401
from tests.security.test_concurrency import race


def test_counters_add_up_when_files_race(client: openai.OpenAI, http: TestClient) -> None:
    vs = client.vector_stores.create(name="racing")
    ids = [upload(client, f"f{i}.txt", f"Document {i} talks about topic number {i}.".encode()) for i in range(16)]
    headers = {"OpenAI-Beta": "assistants=v2"}

    def attach(i: int) -> int:
        # every file twice at once: one of the two copies replaces the other
        return http.post(f"/v1/vector_stores/{vs.id}/files", json={"file_id": ids[i // 2]},
                         headers=headers).status_code

    statuses = race(32, attach)
    assert set(statuses) <= {200, 400}
    deadline = time.monotonic() + 60
    while (store := client.vector_stores.retrieve(vs.id)).file_counts.in_progress and time.monotonic() < deadline:
        time.sleep(0.1)
    counts = store.file_counts
    listed = client.vector_stores.files.list(vs.id, limit=100).data
    assert counts.total == len(listed) == len({f.id for f in listed})
    assert counts.completed == sum(f.status == "completed" for f in listed) == len(listed)
    assert counts.in_progress == counts.failed == counts.cancelled == 0
    assert {f.id for f in listed} == set(ids[:16])
    removed = race(8, lambda i: client.vector_stores.files.delete(ids[i], vector_store_id=vs.id).deleted)
    assert all(removed)
    after = client.vector_stores.retrieve(vs.id).file_counts
    assert (after.total, after.completed) == (8, 8)
    assert after.total == len(client.vector_stores.files.list(vs.id, limit=100).data)
