"""The /vector_stores API through the official SDK, in process (core app factory + TestClient)."""

from __future__ import annotations

import io
from collections.abc import Callable

import openai
import pytest
from fastapi.testclient import TestClient

from spindle.retrieval.parsers import FORMATS
from tests.retrieval.conftest import upload
from tests.retrieval.test_index import FACTS
from tests.retrieval.test_parsers import sample_file


def _stream(name: str, data: bytes) -> io.BytesIO:
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


def test_every_format_corrupt_and_unsupported_in_one_batch(client: openai.OpenAI) -> None:
    vs = client.vector_stores.create(name="Financial Statements")
    files = [_stream(f"sample.{ext}", sample_file(ext, FACTS[ext])) for ext in sorted(FORMATS)]
    files += [_stream("corrupt.pdf", b"%PDF-1.7\nthis is not really a pdf"), _stream("image.png", b"\x89PNG....")]
    batch = client.vector_stores.file_batches.upload_and_poll(vector_store_id=vs.id, files=files)
    assert batch.status == "completed"
    assert batch.file_counts.completed == len(FORMATS) and batch.file_counts.failed == 2
    assert batch.file_counts.total == len(FORMATS) + 2 and batch.file_counts.in_progress == 0
    names = {f.id: f.filename for f in client.files.list()}
    failed = {names[f.id]: f.last_error.code for f in client.vector_stores.files.list(vs.id, filter="failed")
              if f.last_error}
    assert failed == {"corrupt.pdf": "invalid_file", "image.png": "unsupported_file"}
    for ext, fact in FACTS.items():
        page = client.vector_stores.search(vs.id, query=fact, max_num_results=3)
        assert page.data[0].filename == f"sample.{ext}", ext
        assert fact.split()[-1] in page.data[0].content[0].text
    store = client.vector_stores.retrieve(vs.id)
    assert store.status == "completed" and store.usage_bytes > 0 and store.file_counts.completed == len(FORMATS)


def test_file_lifecycle(client: openai.OpenAI) -> None:
    vs = client.vector_stores.create(name="lifecycle", chunking_strategy={
        "type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}})
    text = " ".join(f"Sentence {i}: the archive stores maps of the old harbour." for i in range(60))
    file_id = upload(client, "archive.md", text.encode())
    done = client.vector_stores.files.create_and_poll(file_id=file_id, vector_store_id=vs.id,
                                                      attributes={"region": "north", "year": 2024})
    assert done.status == "completed" and done.id == file_id and done.usage_bytes > 0
    assert done.chunking_strategy.static.max_chunk_size_tokens == 800  # per-file default is auto
    assert [f.id for f in client.vector_stores.files.list(vs.id, filter="completed")] == [file_id]
    assert list(client.vector_stores.files.list(vs.id, filter="failed")) == []
    content = list(client.vector_stores.files.content(file_id=file_id, vector_store_id=vs.id))
    assert content[0].text == text
    updated = client.vector_stores.files.update(file_id=file_id, vector_store_id=vs.id,
                                                attributes={"region": "south"})
    assert updated.attributes == {"region": "south"}
    hit = client.vector_stores.search(vs.id, query="harbour maps",
                                      filters={"type": "eq", "key": "region", "value": "south"})
    assert hit.data and hit.data[0].attributes == {"region": "south"}
    assert not client.vector_stores.search(vs.id, query="harbour maps",
                                           filters={"type": "eq", "key": "region", "value": "north"}).data
    deleted = client.vector_stores.files.delete(file_id=file_id, vector_store_id=vs.id)
    assert deleted.deleted and deleted.object == "vector_store.file.deleted"
    assert client.vector_stores.retrieve(vs.id).file_counts.total == 0
    assert not client.vector_stores.search(vs.id, query="harbour maps").data
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(file_id=file_id, vector_store_id=vs.id)


def test_batches_by_ids_and_files_and_listing(client: openai.OpenAI) -> None:
    ids = [upload(client, f"n{i}.txt", f"Note {i}: otters hold hands while sleeping {i}.".encode()) for i in range(4)]
    vs = client.vector_stores.create(name="batches")
    batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=vs.id, file_ids=ids[:2])
    assert batch.status == "completed" and batch.file_counts.completed == 2
    listed = [f.id for f in client.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=vs.id)]
    assert sorted(listed) == sorted(ids[:2])
    second = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=vs.id, files=[{"file_id": ids[2], "attributes": {"k": "v"}}, {"file_id": ids[3]}])
    assert second.file_counts.completed == 2
    page = client.vector_stores.files.list(vs.id, limit=2, order="asc")
    assert len(page.data) == 2 and page.has_more
    rest = client.vector_stores.files.list(vs.id, limit=10, order="asc", after=page.data[-1].id)
    assert [f.id for f in page.data] + [f.id for f in rest.data] == ids
    assert client.vector_stores.files.retrieve(file_id=ids[2], vector_store_id=vs.id).attributes == {"k": "v"}
    cancelled = client.vector_stores.file_batches.cancel(batch_id=batch.id, vector_store_id=vs.id)
    assert cancelled.status == "completed"  # nothing left to cancel
    stores = [s.id for s in client.vector_stores.list()]
    assert vs.id in stores


def test_store_create_with_files_modify_and_delete(client: openai.OpenAI) -> None:
    ids = [upload(client, "a.txt", b"Alpacas hum when curious."), upload(client, "b.txt", b"Bison roll in dust.")]
    vs = client.vector_stores.create(name="Product Documentation", file_ids=ids,
                                     expires_after={"anchor": "last_active_at", "days": 7}, metadata={"team": "x"})
    assert vs.file_counts.total == 2 and vs.expires_after.days == 7
    assert vs.expires_at == vs.last_active_at + 7 * 86400
    modified = client.vector_stores.update(vs.id, name="renamed", metadata={"team": "y"})
    assert modified.name == "renamed" and modified.metadata == {"team": "y"}
    cleared = client.vector_stores.update(vs.id, expires_after=None)
    assert cleared.expires_at is None
    assert client.vector_stores.delete(vs.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(vs.id)


def test_poll_header_on_retrieves(http: TestClient, client: openai.OpenAI) -> None:
    vs = client.vector_stores.create(name="poll")
    response = http.get(f"/v1/vector_stores/{vs.id}")
    assert response.headers["openai-poll-after-ms"] == "50"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/vector_stores", {"chunking_strategy": {"type": "static", "static": {
            "max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}}},
         "chunking_strategy.static.max_chunk_size_tokens"),
        ("/v1/vector_stores", {"expires_after": {"anchor": "created_at", "days": 3}}, "expires_after.anchor"),
        ("/v1/vector_stores", {"file_ids": ["file-nope"]}, "file_ids[0]"),
        ("/v1/vector_stores/{vs}/file_batches", {"file_ids": [f"file-{i}" for i in range(501)]}, "file_ids"),
        ("/v1/vector_stores/{vs}/file_batches", {"files": [{"file_id": f"file-{i}"} for i in range(501)]}, "files"),
        ("/v1/vector_stores/{vs}/file_batches", {}, "file_ids"),
        ("/v1/vector_stores/{vs}/files", {"file_id": "file-missing"}, "file_id"),
        ("/v1/vector_stores/{vs}/search", {"query": "x", "max_num_results": 51}, "max_num_results"),
        ("/v1/vector_stores/{vs}/search", {"query": "x", "filters": {"type": "like", "key": "a", "value": 1}},
         "filters.type"),
        ("/v1/vector_stores/{vs}/search", {"query": "x", "ranking_options": {"score_threshold": 2}},
         "ranking_options.score_threshold"),
    ],
)
def test_invalid_requests_are_400_naming_the_param(http: TestClient, client: openai.OpenAI, path: str,
                                                   body: dict, param: str) -> None:
    vs = client.vector_stores.create(name="errors")
    response = http.post(path.format(vs=vs.id), json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_size_and_count_limits(client: openai.OpenAI, http: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from spindle.vector_stores import objects

    vs = client.vector_stores.create(name="limits")
    small = upload(client, "small.txt", b"tiny file")
    big = upload(client, "big.txt", b"x" * 2048)
    monkeypatch.setattr(objects, "MAX_FILE_BYTES", 1024)
    response = http.post(f"/v1/vector_stores/{vs.id}/files", json={"file_id": big})
    assert response.status_code == 400 and response.json()["error"]["code"] == "file_too_large"
    assert response.json()["error"]["param"] == "file_id"
    monkeypatch.setattr(objects, "MAX_FILES_PER_STORE", 1)
    assert http.post(f"/v1/vector_stores/{vs.id}/files", json={"file_id": small}).status_code == 200
    other = upload(client, "other.txt", b"another file")
    response = http.post(f"/v1/vector_stores/{vs.id}/file_batches", json={"file_ids": [other]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "file_ids"


def test_deleting_a_file_removes_it_from_every_store(client: openai.OpenAI) -> None:
    file_id = upload(client, "shared.txt", b"Narwhal tusks are teeth.")
    one = client.vector_stores.create(name="one", file_ids=[file_id])
    two = client.vector_stores.create(name="two", file_ids=[file_id])
    for vs in (one, two):
        client.vector_stores.files.poll(file_id, vector_store_id=vs.id)
        assert client.vector_stores.search(vs.id, query="narwhal").data
    client.files.delete(file_id)
    for vs in (one, two):
        assert client.vector_stores.retrieve(vs.id).file_counts.total == 0
        assert not client.vector_stores.search(vs.id, query="narwhal").data


def test_expiry(client: openai.OpenAI, http: TestClient) -> None:
    import asyncio

    vs = client.vector_stores.create(name="short", expires_after={"anchor": "last_active_at", "days": 1})
    runtime = http.app.state.runtime  # type: ignore[attr-defined]

    async def age() -> None:
        obj = await runtime.store.get("vector_store", vs.id, None)
        obj["last_active_at"] -= 2 * 86400
        obj["expires_at"] -= 2 * 86400
        await runtime.store.put("vector_store", obj, "default")

    http.portal.call(age)  # type: ignore[union-attr]
    assert client.vector_stores.retrieve(vs.id).status == "expired"
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(vs.id, query="anything")
    assert asyncio.iscoroutinefunction(age)


def test_restart_resumes_unfinished_files(make_app: Callable[..., TestClient], tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = make_app()
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=first, max_retries=0)
    file_id = upload(client, "resume.txt", b"The lighthouse on Skerry Isle has a green lamp.")
    vs = client.vector_stores.create(name="resume", file_ids=[file_id])
    client.vector_stores.files.poll(file_id, vector_store_id=vs.id)
    runtime = first.app.state.runtime  # type: ignore[attr-defined]

    async def crash_mid_ingest() -> None:  # as if the process died while ingesting
        key = f"{vs.id}:{file_id}"
        obj = await runtime.store.get("vector_store_file", key, None)
        store = await runtime.store.get("vector_store", vs.id, None)
        obj["status"] = "in_progress"
        store["file_counts"].update(completed=0, in_progress=1)
        await runtime.store.put("vector_store_file", obj, "default", parent=vs.id)
        await runtime.store.put("vector_store", store, "default")

    first.portal.call(crash_mid_ingest)  # type: ignore[union-attr]
    first.__exit__(None, None, None)
    second = make_app()
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=second, max_retries=0)
    done = client.vector_stores.files.poll(file_id, vector_store_id=vs.id)
    assert done.status == "completed"
    store = client.vector_stores.retrieve(vs.id)
    assert store.file_counts.completed == 1 and store.file_counts.in_progress == 0
    hits = client.vector_stores.search(vs.id, query="green lamp lighthouse").data
    assert len(hits) == 1  # re-ingesting replaced the earlier copy, no duplicates


def test_search_rewrites_queries_when_a_model_is_set(make_app: Callable[..., TestClient], upstream,  # type: ignore[no-untyped-def]
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINDLE_RETRIEVAL_REWRITE_MODEL", "gpt-4o-mini")
    http = make_app()
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http, max_retries=0)
    file_id = upload(client, "ops.txt", b"The backup generator is tested every Tuesday at noon.")
    vs = client.vector_stores.create(name="ops", file_ids=[file_id])
    client.vector_stores.files.poll(file_id, vector_store_id=vs.id)
    upstream.script("You turn questions into search queries", [{"content": '["backup generator test schedule"]'}])
    page = client.vector_stores.search(vs.id, query="when do they test it?", rewrite_query=True)
    assert page.search_query == ["when do they test it?", "backup generator test schedule"]
    assert page.data[0].file_id == file_id
    plain = client.vector_stores.search(vs.id, query=["when do they test it?", "generator"])
    assert plain.search_query == ["when do they test it?", "generator"]
