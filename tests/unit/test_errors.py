"""Bad input: the right status, OpenAI's envelope, the parameter named, nothing half-made."""

from __future__ import annotations

import json
import random
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_malformed_json(http: TestClient) -> None:
    response = http.post("/v1/assistants", content=b"{not json", headers={"content-type": "application/json"})
    assert "parse the JSON body" in error_of(response, 400)["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({}, "model"),
    ({"model": "m", "temperature": "hot"}, "temperature"),
    ({"model": "m", "temperature": 3}, "temperature"),
    ({"model": "m", "top_p": -1}, "top_p"),
    ({"model": "m", "name": "x" * 300}, "name"),
    ({"model": "m", "tools": [{"type": "browser"}]}, "tools[0]"),
    ({"model": "m", "tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
    ({"model": "m", "tools": [{"type": "file_search", "file_search": {"max_num_results": 99}}]},
     "tools[0].file_search.max_num_results"),
    ({"model": "m", "metadata": {"k": 1}}, "metadata"),
    ({"model": "m", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"model": "m", "response_format": {"type": "yaml"}}, "response_format"),
    ({"model": "m", "tool_resources": {"code_interpreter": {"file_ids": ["file-nope"]}}},
     "tool_resources.code_interpreter.file_ids[0]"),
])
def test_assistant_validation_names_the_param(http: TestClient, body: dict[str, Any], param: str) -> None:
    error = error_of(http.post("/v1/assistants", json=body), 400)
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert http.get("/v1/assistants").json()["data"] == []  # nothing half-created


def test_unknown_ids_are_404(http: TestClient) -> None:
    for path in ("/v1/assistants/asst_nope", "/v1/threads/thread_nope", "/v1/files/file-nope",
                 "/v1/threads/thread_nope/messages", "/v1/threads/thread_nope/runs/run_x"):
        assert error_of(http.get(path), 404)["type"] == "invalid_request_error"


def test_unknown_route_and_method(http: TestClient) -> None:
    assert "Invalid URL" in error_of(http.get("/v1/nothing-here"), 404)["message"]
    error_of(http.put("/v1/assistants"), 405)


def test_list_parameters(http: TestClient) -> None:
    assert error_of(http.get("/v1/assistants?limit=0"), 400)["param"] == "limit"
    assert error_of(http.get("/v1/assistants?limit=101"), 400)["param"] == "limit"
    assert error_of(http.get("/v1/assistants?limit=ten"), 400)["param"] == "limit"
    assert error_of(http.get("/v1/assistants?order=up"), 400)["param"] == "order"
    assert error_of(http.get("/v1/assistants?after=asst_unknown"), 400)["param"] == "after"


def test_run_validation(http: TestClient, client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create()
    url = f"/v1/threads/{thread.id}/runs"
    assert error_of(http.post(url, json={}), 400)["param"] == "assistant_id"
    assert error_of(http.post(url, json={"assistant_id": "asst_missing"}), 404)["param"] == "assistant_id"
    assert error_of(http.post(url, json={"assistant_id": assistant.id, "tool_choice": "always"}), 400)["param"] == "tool_choice"
    assert error_of(http.post(url, json={"assistant_id": assistant.id, "tool_choice": {
        "type": "function", "function": {"name": "absent"}}}), 400)["param"] == "tool_choice"
    assert error_of(http.post(url, json={"assistant_id": assistant.id, "max_prompt_tokens": 5}), 400)["param"] == "max_prompt_tokens"
    assert error_of(http.post(url, json={"assistant_id": assistant.id, "truncation_strategy": {"type": "middle"}}),
                    400)["param"] == "truncation_strategy.type"
    assert error_of(http.post(url, json={"assistant_id": assistant.id, "additional_messages": [{"role": "system",
                    "content": "x"}]}), 400)["param"] == "additional_messages[0].role"
    assert error_of(http.post(url + "?include[]=everything", json={"assistant_id": assistant.id}), 400)["param"] == "include"
    assert http.get(url).json()["data"] == []


def test_message_validation(http: TestClient, client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    url = f"/v1/threads/{thread.id}/messages"
    assert error_of(http.post(url, json={"role": "user"}), 400)["param"] == "content"
    assert error_of(http.post(url, json={"role": "robot", "content": "x"}), 400)["param"] == "role"
    assert error_of(http.post(url, json={"role": "user", "content": [{"type": "video"}]}), 400)["param"] == "content[0]"
    assert error_of(http.post(url, json={"role": "user", "content": "x", "attachments": [
        {"file_id": "file-none", "tools": [{"type": "code_interpreter"}]}]}), 400)["param"] == "attachments[0].file_id"
    error = error_of(http.post("/v1/threads", json={"messages": [{"role": "user", "content": "ok"},
                                                                 {"role": "user"}]}), 400)
    assert error["param"] == "messages[1].content"
    assert http.get(url).json()["data"] == []


def test_tool_outputs_validation(http: TestClient, client: openai.OpenAI, upstream: Any) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    upstream.script("call f", [{"tool_calls": [{"name": "f", "arguments": "{}"}]}])
    assistant = client.beta.assistants.create(model="m", tools=[tool])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "call f"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    url = f"/v1/threads/{thread.id}/runs/{run.id}/submit_tool_outputs"
    assert error_of(http.post(url, json={}), 400)["param"] == "tool_outputs"
    assert error_of(http.post(url, json={"tool_outputs": [{"tool_call_id": "call_wrong", "output": "x"}]}),
                    400)["param"] == "tool_outputs[0].tool_call_id"
    assert error_of(http.post(url, json={"tool_outputs": []}), 400)["param"] == "tool_outputs"
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "requires_action"


def test_files_validation(make_app: Any) -> None:
    http = make_app(max_upload_bytes=1000)
    assert error_of(http.post("/v1/files", files={"file": ("a.txt", b"x")}), 400)["param"] == "purpose"
    assert error_of(http.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "fun"}), 400)["param"] == "purpose"
    assert error_of(http.post("/v1/files", data={"purpose": "assistants"}), 400)["param"] == "file"
    error = error_of(http.post("/v1/files", files={"file": ("big.txt", b"x" * 5000)}, data={"purpose": "assistants"}), 413)
    assert error["param"] == "file" and "maximum file size" in error["message"]
    assert http.get("/v1/files").json()["data"] == []
    staging = http.app.state.runtime.blobs.staging_dir()
    assert list(staging.iterdir()) == []  # nothing half-written


def test_random_bodies_never_cause_a_500(http: TestClient, client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create()
    rng = random.Random(7)
    values: list[Any] = [None, 0, -1, 1.5, "x", "", [], [1], {}, {"type": "x"}, True, "a" * 3000,
                         [{"type": "function"}], {"file_search": {"vector_store_ids": [1]}}, [{"role": "user"}]]
    keys = ["model", "name", "tools", "tool_resources", "metadata", "temperature", "content", "role", "messages",
            "attachments", "assistant_id", "tool_choice", "stream", "thread", "truncation_strategy", "file_ids",
            "response_format", "additional_messages", "max_prompt_tokens", "tool_outputs", "instructions"]
    paths = ["/v1/assistants", f"/v1/assistants/{assistant.id}", "/v1/threads", f"/v1/threads/{thread.id}",
             f"/v1/threads/{thread.id}/messages", f"/v1/threads/{thread.id}/runs", "/v1/threads/runs"]
    for _ in range(300):
        body = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 4))}
        if rng.random() < 0.5:
            body["assistant_id"] = assistant.id
        path = rng.choice(paths)
        response = http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        assert response.status_code < 500, (path, body, response.text)
        if response.status_code == 200 and "/runs" in path and response.json().get("object") == "thread.run":
            run = response.json()
            http.post(f"/v1/threads/{run['thread_id']}/runs/{run['id']}/cancel")


def test_hostile_filenames_cannot_break_headers(http: TestClient, client: openai.OpenAI) -> None:
    name = 'evil"\r\nSet-Cookie: x=1; ü.txt'
    uploaded = http.post("/v1/files", files={"file": (name, b"data")}, data={"purpose": "assistants"})
    assert uploaded.status_code == 200, uploaded.text
    response = http.get(f"/v1/files/{uploaded.json()['id']}/content")
    assert response.status_code == 200 and response.content == b"data"
    assert "set-cookie" not in response.headers
    assert "\r" not in response.headers["content-disposition"] and "filename*=UTF-8''" in response.headers["content-disposition"]


def test_the_largest_documented_bodies_are_accepted(http: TestClient) -> None:
    # 32 messages at the 256,000-character limit, in 4-byte UTF-8 characters (32.8 MB), fit
    # under the default JSON body cap.
    messages = [{"role": "user", "content": [{"type": "text", "text": "😀" * 128_000},
                                             {"type": "text", "text": "𝄞" * 128_000}]} for _ in range(32)]
    response = http.post("/v1/threads", json={"messages": messages})
    assert response.status_code == 200, response.text[:300]
    listed = http.get(f"/v1/threads/{response.json()['id']}/messages?limit=100").json()["data"]
    assert len(listed) == 32 and listed[0]["content"][0]["text"]["value"] == "😀" * 128_000


def test_nested_and_non_ascii_json_within_limits_is_accepted(http: TestClient) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(40):  # a deep but real JSON schema
        schema = {"type": "object", "properties": {"inner": schema}}
    tool = {"type": "function", "function": {"name": "deep", "parameters": schema}}
    body = {"model": "m", "name": "名前 😀", "metadata": {"clé": "välue 😀"}, "tools": [tool],
            "temperature": 1, "top_p": 0.5}
    response = http.post("/v1/assistants", json=body)
    assert response.status_code == 200, response.text
    got = http.get(f"/v1/assistants/{response.json()['id']}").json()
    assert got["name"] == "名前 😀" and got["metadata"] == {"clé": "välue 😀"}
    assert got["tools"][0]["function"]["parameters"] == schema
