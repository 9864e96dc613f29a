"""The Containers API in process (rows, files, expiry): the real app and the official SDK.
The sandbox is off here; the live session is tested in tests/e2e/test_responses_code.py."""

from __future__ import annotations

import time

import openai
import pytest
from fastapi.testclient import TestClient

from spindle.store.base import Update


def _upload(client: openai.OpenAI, name: str, data: bytes) -> str:
    return client.files.create(file=(name, data), purpose="assistants").id


def test_create_list_retrieve_delete(client: openai.OpenAI) -> None:
    first = _upload(client, "data.csv", b"a,b\n1,2\n")
    container = client.containers.create(name="analysis", file_ids=[first], memory_limit="1g",
                                         network_policy={"type": "disabled"},
                                         expires_after={"anchor": "last_active_at", "minutes": 5})
    assert container.id.startswith("cntr_") and container.object == "container" and container.status == "running"
    assert (container.name, container.memory_limit) == ("analysis", "1g")
    assert container.network_policy is not None and container.network_policy.type == "disabled"
    assert container.expires_after is not None and container.expires_after.minutes == 5
    assert container.last_active_at == container.created_at
    default = client.containers.create(name="plain")
    assert default.expires_after is not None and default.expires_after.minutes == 20  # OpenAI's default
    assert default.memory_limit == "1g"
    assert default.network_policy is not None and default.network_policy.type == "disabled"  # no network here
    assert client.containers.retrieve(container.id).model_dump() == container.model_dump()
    listed = client.containers.list(order="asc")
    assert [c.id for c in listed.data] == [container.id, default.id]
    assert [c.id for c in client.containers.list(limit=1).data] == [default.id]
    [copied] = client.containers.files.list(container.id).data
    assert (copied.path, copied.bytes, copied.source, copied.container_id) == ("/mnt/data/data.csv", 8, "user",
                                                                               container.id)
    assert client.containers.files.content.retrieve(copied.id, container_id=container.id).read() == b"a,b\n1,2\n"
    client.containers.delete(container.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client.containers.retrieve(container.id)
    assert gone.value.body["param"] == "container_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.containers.files.list(container.id)
    assert [c.id for c in client.containers.list().data] == [default.id]


def test_container_files_upload_file_id_delete(client: openai.OpenAI) -> None:
    container = client.containers.create(name="files")
    uploaded = client.containers.files.create(container.id, file=("notes.txt", b"hello"))
    assert (uploaded.path, uploaded.bytes, uploaded.source) == ("/mnt/data/notes.txt", 5, "user")
    again = client.containers.files.create(container.id, file=("notes.txt", b"second"))
    assert again.path == "/mnt/data/notes (1).txt"  # never overwrites
    by_id = client.containers.files.create(container.id, file_id=_upload(client, "../../etc/passwd", b"x"))
    assert by_id.path == "/mnt/data/passwd"  # only the base name is kept
    assert client.containers.files.retrieve(uploaded.id, container_id=container.id).model_dump() == \
        uploaded.model_dump()
    assert [f.id for f in client.containers.files.list(container.id, order="asc").data] == [
        uploaded.id, again.id, by_id.id]
    assert client.containers.files.content.retrieve(again.id, container_id=container.id).read() == b"second"
    client.containers.files.delete(uploaded.id, container_id=container.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.containers.files.retrieve(uploaded.id, container_id=container.id)
    assert missing.value.body["param"] == "file_id"  # type: ignore[index]
    other = client.containers.create(name="other")
    with pytest.raises(openai.NotFoundError):  # a file is only reachable through its own container
        client.containers.files.retrieve(again.id, container_id=other.id)


def test_bad_requests_name_their_param(client: openai.OpenAI, http: TestClient) -> None:
    cases = [({"name": "x", "memory_limit": "2g"}, "memory_limit"),
             ({"name": "x", "file_ids": ["file-missing"]}, "file_ids[0]"),
             ({"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}}, "expires_after.anchor"),
             ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 0}}, "expires_after.minutes"),
             ({}, "name")]
    for body, param in cases:
        answer = http.post("/v1/containers", json=body)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, (body, answer.text)
    assert http.get("/v1/containers").json()["data"] == []  # nothing half-written
    container = client.containers.create(name="x")
    answer = http.post(f"/v1/containers/{container.id}/files", json={"file_id": "file-missing"})
    assert answer.status_code == 404 and answer.json()["error"]["param"] == "file_id"
    answer = http.post(f"/v1/containers/{container.id}/files", files={"other": ("a", b"b")})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"
    assert http.get(f"/v1/containers/{container.id}/files").json()["data"] == []


def test_expired_container_is_shown_expired_and_refuses_files(client: openai.OpenAI, http: TestClient) -> None:
    container = client.containers.create(name="old", expires_after={"anchor": "last_active_at", "minutes": 1})
    kept = client.containers.files.create(container.id, file=("kept.txt", b"kept"))
    store = http.app.state.runtime.store  # type: ignore[attr-defined]
    stale = Update("container", container.id, fields={"last_active_at": int(time.time()) - 61})
    http.portal.call(store.write, [stale])  # type: ignore[union-attr]
    assert client.containers.retrieve(container.id).status == "expired"
    with pytest.raises(openai.BadRequestError) as refused:
        client.containers.files.create(container.id, file=("new.txt", b"new"))
    assert refused.value.code == "container_expired"
    # What it held stays readable until it is deleted.
    assert client.containers.files.content.retrieve(kept.id, container_id=container.id).read() == b"kept"


def test_azure_v1_container_paths(http: TestClient) -> None:
    made = http.post("/openai/v1/containers", json={"name": "azure"}, headers={"api-key": "sk-test"})
    assert made.status_code == 200, made.text
    listed = http.get("/openai/v1/containers", headers={"api-key": "sk-test"}).json()
    assert [c["id"] for c in listed["data"]] == [made.json()["id"]]
    gone = http.delete(f"/openai/v1/containers/{made.json()['id']}", headers={"api-key": "sk-test"})
    assert gone.json() == {"id": made.json()["id"], "object": "container.deleted", "deleted": True}


def test_what_the_server_cannot_give_is_a_400_naming_it(client: openai.OpenAI, http: TestClient) -> None:
    """More memory than a session may have here (SPINDLE_SANDBOX_MEMORY_MB, 2048 MiB by
    default) and network access (the sandbox has none) are refused, never silently reduced."""
    for limit in ("4g", "16g", "64g"):
        answer = http.post("/v1/containers", json={"name": "big", "memory_limit": limit})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == "memory_limit" and "2048 MiB" in error["message"] and "'1g'" in error["message"]
    allow = {"type": "allowlist", "allowed_domains": ["pypi.org"]}
    answer = http.post("/v1/containers", json={"name": "net", "network_policy": allow})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "network_policy.type", answer.text
    answer = http.post("/v1/containers", json={"name": "net", "network_policy": {"type": "open"}})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "network_policy.type", answer.text
    # The same rules for a response's auto container, before anything is written.
    upstream_tools = [
        ({"type": "auto", "memory_limit": "16g"}, "tools[0].container.memory_limit"),
        ({"type": "auto", "network_policy": allow}, "tools[0].container.network_policy.type"),
    ]
    for container, param in upstream_tools:
        answer = http.post("/v1/responses", json={"model": "m", "input": "hi", "store": True, "tools": [
            {"type": "code_interpreter", "container": container}]})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    assert http.get("/v1/containers").json()["data"] == []  # nothing half-written
