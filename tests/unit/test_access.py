"""Keys and projects, Azure URL shapes and api-versions, and the v1 API shape."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from spindle.api.context import check_azure_version
from spindle.errors import InvalidRequestError


def sdk(http: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)


def test_projects_are_isolated(make_app: Any) -> None:
    http = make_app(api_keys="key-a:alpha,key-b:beta,key-a2:alpha")
    a, b, a2 = sdk(http, "key-a"), sdk(http, "key-b"), sdk(http, "key-a2")
    assistant = a.beta.assistants.create(model="m")
    thread = a.beta.threads.create(messages=[{"role": "user", "content": "secret"}])
    uploaded = a.files.create(file=("s.txt", b"secret bytes"), purpose="assistants")
    run = a.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    for call in (lambda: b.beta.assistants.retrieve(assistant.id), lambda: b.beta.threads.retrieve(thread.id),
                 lambda: b.files.retrieve(uploaded.id), lambda: b.files.content(uploaded.id),
                 lambda: b.beta.threads.messages.list(thread_id=thread.id),
                 lambda: b.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
                 lambda: b.beta.assistants.delete(assistant.id), lambda: b.files.delete(uploaded.id),
                 lambda: b.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert b.beta.assistants.list().data == [] and b.files.list().data == []
    other_thread = b.beta.threads.create()
    with pytest.raises(openai.NotFoundError):  # another project's assistant cannot be used either
        b.beta.threads.runs.create(thread_id=other_thread.id, assistant_id=assistant.id)
    # A second key of the same project sees everything.
    assert a2.beta.assistants.retrieve(assistant.id).id == assistant.id
    assert [f.id for f in a2.files.list()] == [uploaded.id]


def test_keys_are_required_when_configured(make_app: Any) -> None:
    http = make_app(api_keys="only-key")
    with pytest.raises(openai.AuthenticationError):
        sdk(http, "wrong").beta.assistants.list()
    response = http.get("/v1/assistants")
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"
    assert http.get("/v1/assistants", headers={"api-key": "only-key"}).status_code == 200
    assert http.get("/v1/assistants", headers={"authorization": "Bearer only-key"}).status_code == 200


def test_azure_client_and_deployment_paths(http: Any, azure: openai.AzureOpenAI) -> None:
    assistant = azure.beta.assistants.create(model="gpt-4-deployment", tools=[{"type": "code_interpreter"}])
    assert azure.beta.assistants.retrieve(assistant.id).model == "gpt-4-deployment"
    deployment = openai.AzureOpenAI(azure_endpoint="http://testserver", azure_deployment="dep1", api_key="k",
                                    api_version="2024-05-01-preview", http_client=http, max_retries=0)
    assert deployment.beta.assistants.retrieve(assistant.id).id == assistant.id
    response = http.get(f"/openai/deployments/dep1/assistants/{assistant.id}?api-version=2024-05-01-preview")
    assert response.status_code == 200


def test_azure_api_version_errors(http: Any) -> None:
    missing = http.get("/openai/assistants")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingApiVersionParameter"
    for bad in ("2023-01-01", "banana", "2999-01-01-preview"):
        response = http.get(f"/openai/assistants?api-version={bad}")
        assert response.status_code == 400, bad
        assert response.json()["error"]["param"] == "api-version"


def test_version_rules() -> None:
    assert check_azure_version("2024-02-15-preview", "2026-01-01") == "v1"
    assert check_azure_version("2024-05-01-preview", "2026-01-01") == "v2"
    assert check_azure_version("2025-04-01-preview", "2026-01-01") == "v2"
    with pytest.raises(InvalidRequestError):
        check_azure_version(None, "2026-01-01")


def test_v1_shape_file_ids(http: Any, client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("speech.py", b"print('hi')"), purpose="assistants")
    v1 = {"OpenAI-Beta": "assistants=v1"}
    created = http.post("/v1/assistants", headers=v1, json={"model": "m", "tools": [{"type": "code_interpreter"},
                        {"type": "retrieval"}], "file_ids": []}).json()
    assert created["file_ids"] == [] and {t["type"] for t in created["tools"]} == {"code_interpreter", "retrieval"}
    attached = http.post(f"/v1/assistants/{created['id']}/files", headers=v1, json={"file_id": uploaded.id}).json()
    assert attached["object"] == "assistant.file" and attached["assistant_id"] == created["id"]
    listed = http.get(f"/v1/assistants/{created['id']}/files", headers=v1).json()
    assert [f["id"] for f in listed["data"]] == [uploaded.id]
    again = http.get(f"/v1/assistants/{created['id']}", headers=v1).json()
    assert again["file_ids"] == [uploaded.id]
    # The same assistant in v2 shape: the file feeds Code Interpreter.
    v2 = client.beta.assistants.retrieve(created["id"])
    assert v2.tool_resources.code_interpreter.file_ids == [uploaded.id]
    thread = http.post("/v1/threads", headers=v1, json={"messages": [
        {"role": "user", "content": "solve 3x + 11 = 14", "file_ids": [uploaded.id]}]}).json()
    message = http.get(f"/v1/threads/{thread['id']}/messages", headers=v1).json()["data"][0]
    assert message["file_ids"] == [uploaded.id]
    files = http.get(f"/v1/threads/{thread['id']}/messages/{message['id']}/files", headers=v1).json()
    assert files["data"][0]["object"] == "thread.message.file"
    deleted = http.delete(f"/v1/assistants/{created['id']}/files/{uploaded.id}", headers=v1).json()
    assert deleted["deleted"] is True
    assert http.get(f"/v1/assistants/{created['id']}", headers=v1).json()["file_ids"] == []


def test_v1_file_ids_accepted_with_v2_version(azure: openai.AzureOpenAI) -> None:
    uploaded = azure.files.create(file=("speech.py", b"x = 1"), purpose="assistants")
    # The seed's own snippet passes v1 file_ids with api-version 2024-05-01-preview.
    assistant = azure.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}],
                                             extra_body={"file_ids": [uploaded.id]})
    assert assistant.tool_resources.code_interpreter.file_ids == [uploaded.id]


def test_deleting_a_file_removes_it_from_code_interpreter_resources(client: openai.OpenAI) -> None:
    kept = client.files.create(file=("keep.csv", b"a\n1\n"), purpose="assistants")
    gone = client.files.create(file=("gone.csv", b"b\n2\n"), purpose="assistants")
    both = {"code_interpreter": {"file_ids": [kept.id, gone.id]}}
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}], tool_resources=both)
    thread = client.beta.threads.create(tool_resources=both)
    client.files.delete(gone.id)
    assert client.beta.assistants.retrieve(assistant.id).tool_resources.code_interpreter.file_ids == [kept.id]
    assert client.beta.threads.retrieve(thread.id).tool_resources.code_interpreter.file_ids == [kept.id]
