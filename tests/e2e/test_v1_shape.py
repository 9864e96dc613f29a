"""The v1 Assistants shape, checked against openai 1.20.0's own models (this file runs only
under that SDK): every object the REST API returns and every event a stream sends, for a run
that uses retrieval, a function call (streamed tool outputs) and citations.

Validation is pydantic's, on the SDK's own classes (``model_validate``), so a missing
required field (``file_ids``, ``quote``) or a wrong literal (``file_search`` where v1 says
``retrieval``) fails here. The SDK's own stream helper must also parse the same run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import harness
import httpx
import pytest

pytestmark = pytest.mark.max_sdk(1, 20)

FACT = "The lighthouse on Skerry Point was built in 1874 and is 31 meters tall."
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}


def _models() -> dict[str, Any]:
    from openai.types.beta import Assistant, Thread
    from openai.types.beta.threads import Message, MessageDeltaEvent, Run
    from openai.types.beta.threads.runs import RunStep, RunStepDeltaEvent
    from openai.types.shared import ErrorObject

    return {"assistant": Assistant, "thread": Thread, "thread.message": Message, "thread.message.delta": MessageDeltaEvent,
            "thread.run": Run, "thread.run.step": RunStep, "thread.run.step.delta": RunStepDeltaEvent,
            "error": ErrorObject}


def _model_for_event(name: str) -> Any:
    models = _models()
    if name == "thread.created":
        return models["thread"]
    for prefix in ("thread.run.step.delta", "thread.run.step", "thread.message.delta", "thread.message", "thread.run"):
        if name == prefix or name.startswith(prefix + "."):
            return models[prefix]
    return models[name]


def validate(obj: dict[str, Any]) -> Any:
    """The object validated by its 1.20 model (chosen by ``object``)."""
    return _models()[obj["object"]].model_validate(obj)


class Raw:
    """The same server over plain HTTP, as the v1 SDK talks to it (for the exact JSON)."""

    def __init__(self, kind: str, base_url: str) -> None:
        if kind == "openai":
            self.http = httpx.Client(base_url=f"{base_url}/v1", timeout=60,
                                     headers={"Authorization": "Bearer sk-test", "OpenAI-Beta": "assistants=v1"})
            self.params: dict[str, str] = {}
        else:
            self.http = httpx.Client(base_url=f"{base_url}/openai", timeout=60, headers={"api-key": "sk-test"})
            self.params = {"api-version": "2024-02-15-preview"}

    def get(self, path: str) -> Any:
        response = self.http.get(path, params=self.params)
        assert response.status_code == 200, response.text
        return response.json()

    def stream(self, path: str, body: dict[str, Any]) -> list[tuple[str, str]]:
        events = []
        with self.http.stream("POST", path, params=self.params, json={**body, "stream": True}) as response:
            assert response.status_code == 200
            name = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    events.append((name, line[6:]))
        return events


def check_events(events: list[tuple[str, str]]) -> list[Any]:
    parsed = []
    for name, data in events:
        if name == "done":
            assert data == "[DONE]"
            continue
        parsed.append(_model_for_event(name).model_validate(json.loads(data)))
    return parsed


def test_every_v1_object_and_event_validates(client_kind: str, spindle_server: harness.SpindleServer,
                                             upstream: harness.Upstream) -> None:
    client = harness.make_client(client_kind, spindle_server.base_url)
    raw = Raw(client_kind, spindle_server.base_url)
    # Rules match words of the user's question only: the query rewrite sees just the queries.
    upstream.script("How tall", [
        {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": ["height of the tower"]})}]},
        {"tool_calls": [{"name": "get_weather", "arguments": "{}"}]},
        {"content": "It is 31 meters tall {{marker:0}}; weather: {{last_tool}}.", "chunk_chars": 4},
    ])
    file = client.files.create(file=("lighthouse.txt", FACT.encode()), purpose="assistants")
    assistant = client.beta.assistants.create(model="gpt-4", tools=[{"type": "retrieval"}, WEATHER],
                                              file_ids=[file.id])
    assert assistant.file_ids == [file.id]
    validate(raw.get(f"/assistants/{assistant.id}"))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "How tall is the lighthouse?",
                                                   "file_ids": [file.id]}])
    validate(raw.get(f"/threads/{thread.id}"))
    _wait_for_files(raw, client, assistant.id)

    first = raw.stream(f"/threads/{thread.id}/runs", {"assistant_id": assistant.id})
    parsed = check_events(first)
    runs = [e for e in parsed if getattr(e, "object", None) == "thread.run"]
    assert runs[-1].status == "requires_action"
    assert all(r.file_ids == [file.id] for r in runs)
    assert all(t.type in ("retrieval", "function") for r in runs for t in r.tools)
    step_calls = [c for e in parsed if getattr(e, "object", None) == "thread.run.step"
                  and e.step_details.type == "tool_calls" for c in e.step_details.tool_calls]
    delta_calls = [c for e in parsed if getattr(e, "object", None) == "thread.run.step.delta"
                   for c in e.delta.step_details.tool_calls or []]
    assert {c.type for c in step_calls} == {"retrieval"}
    assert {c.type for c in delta_calls} == {"retrieval", "function"}
    run_id = runs[-1].id
    call_id = runs[-1].required_action.submit_tool_outputs.tool_calls[0].id
    second = raw.stream(f"/threads/{thread.id}/runs/{run_id}/submit_tool_outputs",
                        {"tool_outputs": [{"tool_call_id": call_id, "output": "sunny"}]})
    parsed = check_events(second)
    assert [n for n, _ in second][-2:] == ["thread.run.completed", "done"]
    notes = [a for e in parsed if getattr(e, "object", None) == "thread.message"
             for part in e.content if part.type == "text" for a in part.text.annotations]
    assert notes and all(n.type == "file_citation" and n.file_citation.file_id == file.id for n in notes)
    assert "31 meters" in notes[0].file_citation.quote

    # REST: every object of the run, in the v1 models.
    run = validate(raw.get(f"/threads/{thread.id}/runs/{run_id}"))
    assert run.file_ids == [file.id] and run.status == "completed"
    for listing, kind in ((f"/threads/{thread.id}/runs/{run_id}/steps", "thread.run.step"),
                          (f"/threads/{thread.id}/messages", "thread.message"),
                          (f"/threads/{thread.id}/runs", "thread.run")):
        items = raw.get(listing)["data"]
        assert items and all(validate(item).object == kind for item in items)
    steps = [validate(s) for s in raw.get(f"/threads/{thread.id}/runs/{run_id}/steps")["data"]]
    assert "retrieval" in {c.type for s in steps if s.step_details.type == "tool_calls" for c in s.step_details.tool_calls}
    answer = next(m for m in client.beta.threads.messages.list(thread_id=thread.id).data if m.role == "assistant")
    assert answer.content[0].text.annotations[0].file_citation.quote
    assert answer.file_ids == []
    raw.http.close()
    client.close()


def test_the_v1_sdk_stream_helper_parses_the_run(client_kind: str, spindle_server: harness.SpindleServer,
                                                 upstream: harness.Upstream) -> None:
    client = harness.make_client(client_kind, spindle_server.base_url)
    upstream.script("When was", [
        {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": ["construction year"]})}]},
        {"content": "Built in 1874 {{marker:0}}.", "chunk_chars": 3}])
    file = client.files.create(file=("beacon.txt", FACT.encode()), purpose="assistants")
    assistant = client.beta.assistants.create(model="gpt-4", tools=[{"type": "retrieval"}], file_ids=[file.id])
    raw = Raw(client_kind, spindle_server.base_url)
    _wait_for_files(raw, client, assistant.id)
    raw.http.close()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "When was the beacon built?"}])
    seen: list[str] = []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            seen.append(event.event)
        final = stream.get_final_messages()
    assert seen[-1] == "thread.run.completed" and "thread.run.step.delta" in seen
    assert final[-1].content[0].text.annotations[0].file_citation.quote.startswith("The lighthouse")
    client.close()


def _wait_for_files(raw: Raw, client: Any, assistant_id: str, timeout: float = 60) -> None:
    """v1 assistant files feed a vector store; wait until it is searchable."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assistant = raw.get(f"/assistants/{assistant_id}")
        store_ids = ((assistant.get("tool_resources") or {}).get("file_search") or {}).get("vector_store_ids") or []
        if store_ids and all(raw.get(f"/vector_stores/{s}")["file_counts"]["in_progress"] == 0 for s in store_ids):
            return
        time.sleep(0.1)
    raise AssertionError("assistant files were not ingested in time")


def test_v1_code_interpreter_events_and_steps_validate(client_kind: str, spindle_server: harness.SpindleServer,
                                                       upstream: harness.Upstream) -> None:
    client = harness.make_client(client_kind, spindle_server.base_url)
    raw = Raw(client_kind, spindle_server.base_url)
    code = "import matplotlib.pyplot as plt\nprint('drawn')\nplt.plot([1, 2, 3])\nplt.show()"
    upstream.script("Draw a chart", [
        {"tool_calls": [{"name": "python", "arguments": json.dumps({"code": code})}], "chunk_chars": 9},
        {"content": "Here it is.", "chunk_chars": 3}])
    assistant = client.beta.assistants.create(model="gpt-4", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Draw a chart"}])
    events = raw.stream(f"/threads/{thread.id}/runs", {"assistant_id": assistant.id})
    parsed = check_events(events)
    assert [n for n, _ in events][-2:] == ["thread.run.completed", "done"]
    kinds = {c.type for e in parsed if getattr(e, "object", None) == "thread.run.step.delta"
             for c in e.delta.step_details.tool_calls or []}
    assert kinds == {"code_interpreter"}
    run_id = next(e.id for e in parsed if getattr(e, "object", None) == "thread.run")
    steps = [validate(s) for s in raw.get(f"/threads/{thread.id}/runs/{run_id}/steps")["data"]]
    [call] = [c for s in steps if s.step_details.type == "tool_calls" for c in s.step_details.tool_calls]
    assert call.type == "code_interpreter" and call.code_interpreter.input == code
    assert {o.type for o in call.code_interpreter.outputs} == {"logs", "image"}
    messages = [validate(m) for m in raw.get(f"/threads/{thread.id}/messages")["data"]]
    answer = next(m for m in messages if m.role == "assistant")
    assert [p.type for p in answer.content] == ["image_file", "text"]
    raw.http.close()
    client.close()
