"""Runs through the real app and the real SDK, against the scripted upstream."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from spindle.engine.execution import Execution, RunStopped
from spindle.engine.runner import RESTART_ERROR
from tests.unit.conftest import sse_events
from tests.upstream.server import UpstreamHandle

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def wait_status(client: openai.OpenAI, thread_id: str, run_id: str, statuses: set[str], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        if run.status in statuses:
            return run
        time.sleep(0.02)
    raise AssertionError(f"run stayed {run.status}")


def test_polling_run_answers_and_reports_usage(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    assistant = client.beta.assistants.create(model="m", instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello polling"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "completed"
    assert run.usage is not None and run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens > 0
    assert run.completed_at and run.started_at
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content[0].text.value == "You said: hello polling"
    assert messages[1].run_id == run.id and messages[1].assistant_id == assistant.id
    sent = upstream.requests()[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["model"] == "m" and sent["stream"] is True
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert len(steps) == 1 and steps[0].type == "message_creation" and steps[0].status == "completed"
    assert steps[0].step_details.message_creation.message_id == messages[1].id


def test_poll_header_is_sent(http: TestClient, client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create()
    response = http.post(f"/v1/threads/{thread.id}/runs", json={"assistant_id": assistant.id})
    assert response.status_code == 200
    assert int(response.headers["openai-poll-after-ms"]) > 0


def test_stream_event_order(http: TestClient, client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("order please", [{"content": "one two three four five six", "chunk_chars": 3}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "order please"}])
    response = http.post(f"/v1/threads/{thread.id}/runs", json={"assistant_id": assistant.id, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [e for e, _ in events]
    assert names[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert names[-3:] == ["thread.run.step.completed", "thread.run.completed", "done"]
    assert events[-1][1] == "[DONE]"
    assert names.index("thread.message.created") < names.index("thread.message.delta")
    assert names.index("thread.run.step.created") < names.index("thread.message.created")
    text = "".join(json.loads(d)["delta"]["content"][0]["text"]["value"] for e, d in events if e == "thread.message.delta")
    assert text == "one two three four five six"
    for e, d in events:
        if e == "thread.message.delta":
            part = json.loads(d)["delta"]["content"][0]
            assert part["index"] == 0 and "annotations" not in part["text"]


def test_event_handler_sees_text_and_final_message(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("handler test", [{"content": "streamed answer here", "chunk_chars": 2}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "handler test"}])
    seen: dict[str, Any] = {"deltas": [], "done": []}

    class Handler(openai.AssistantEventHandler):
        def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            seen["deltas"].append(delta.value)

        def on_message_done(self, message: Any) -> None:
            seen["done"].append(message.content[0].text.value)

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         event_handler=Handler()) as stream:
        stream.until_done()
    assert "".join(seen["deltas"]) == "streamed answer here"
    assert seen["done"] == ["streamed answer here"]
    assert stream.get_final_run().status == "completed"


def test_function_calls_polling(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("weather poll", [
        {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        {"name": "get_weather", "arguments": '{"city": "Rome"}'}]},
        {"content": "Result: {{last_tool}}"}])
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather poll"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Rome"]
    assert run.expires_at and run.expires_at > time.time()
    outputs = [{"tool_call_id": c.id, "output": f"sunny in {json.loads(c.function.arguments)['city']}"} for c in calls]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(thread_id=thread.id, run_id=run.id,
                                                                tool_outputs=outputs, poll_interval_ms=20)
    assert run.status == "completed"
    answer = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert answer.content[0].text.value == "Result: sunny in Rome"
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert [c.function.output for c in steps[0].step_details.tool_calls] == ["sunny in Paris", "sunny in Rome"]
    second = upstream.requests()[-1]["messages"]
    assert second[-3]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert [m["content"] for m in second[-2:]] == ["sunny in Paris", "sunny in Rome"]


def test_function_calls_streaming(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("weather stream", [
        {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}], "chunk_chars": 3},
        {"content": "Got {{last_tool}}"}])
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather stream"}])
    created: list[str] = []
    done_args: list[str] = []

    class Handler(openai.AssistantEventHandler):
        def on_tool_call_created(self, tool_call: Any) -> None:
            created.append(tool_call.function.name)

        def on_tool_call_done(self, tool_call: Any) -> None:
            done_args.append(tool_call.function.arguments)

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         event_handler=Handler()) as stream:
        stream.until_done()
    run = stream.current_run
    assert run is not None and run.status == "requires_action"
    assert created == ["get_weather"] and json.loads(done_args[-1]) == {"city": "Oslo"}
    texts: list[str] = []

    class After(openai.AssistantEventHandler):
        def on_text_done(self, text: Any) -> None:
            texts.append(text.value)

    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
    with client.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call_id, "output": "cold"}],
            event_handler=After()) as stream2:
        stream2.until_done()
    assert texts == ["Got cold"]
    assert stream2.current_run.status == "completed"


def test_tool_choice_none_offers_no_tools(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "no tools please"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, tool_choice="none",
                                                   poll_interval_ms=20)
    assert run.status == "completed"
    assert "tools" not in upstream.requests()[-1]


def test_tool_choice_specific_function_is_enforced(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}}
    # The model first ignores the forced choice; Spindle retries with a reminder.
    upstream.script("forced call", [{"content": "I'd rather chat"},
                                    {"tool_calls": [{"name": "get_weather", "arguments": "{}"}]}])
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER, other])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "forced call"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert run.status == "requires_action"
    first, second = upstream.requests()[-2:]
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "must answer this turn by calling" in second["messages"][-1]["content"]
    messages = client.beta.threads.messages.list(thread_id=thread.id).data
    assert all("rather chat" not in m.content[0].text.value for m in messages)


def test_tool_choice_required_fails_when_model_never_complies(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("stubborn", [{"content": "no"}])
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "stubborn"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   tool_choice="required", poll_interval_ms=20)
    assert run.status == "failed"
    assert "tool_choice" in run.last_error.message
    assert upstream.requests()[-1]["tool_choice"] == "required"


def test_a_failure_that_is_not_the_servers_has_no_error_event(http: TestClient, client: openai.OpenAI,
                                                              upstream: UpstreamHandle) -> None:
    """OpenAI streams `error` only for server errors; a forced function the model never calls
    ends with `thread.run.failed` alone (SDK 1.109 yields a stray `error` with event=None)."""
    upstream.script("stubborn stream", [{"content": "no"}])
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "stubborn stream"}])
    response = http.post(f"/v1/threads/{thread.id}/runs", headers={"OpenAI-Beta": "assistants=v2"},
                         json={"assistant_id": assistant.id, "stream": True,
                               "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    names = [name for name, _ in sse_events(response.text)]
    assert names[-2:] == ["thread.run.failed", "done"]
    assert "error" not in names


def test_cancel_a_running_run(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("slow one", [{"content": "a b c d e f g h i j k l m n o p", "chunk_chars": 1, "delay_ms": 100}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "slow one"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    wait_status(client, thread.id, run.id, {"in_progress"})
    time.sleep(0.3)
    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status in ("cancelling", "cancelled")
    final = wait_status(client, thread.id, run.id, {"cancelled"})
    assert final.cancelled_at
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.role == "assistant" and message.status == "incomplete"
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert all(s.status == "cancelled" for s in steps)
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert info.value.status_code == 400


def test_one_active_run_per_thread(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("keep busy", [{"content": "x", "hang": True}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "keep busy"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert "already has an active run" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")
    assert run.id in info.value.message
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    wait_status(client, thread.id, run.id, {"cancelled"})


def test_upstream_failure_fails_the_run(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("explode", [{"error": {"status": 500, "message": "GPU on fire"}}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "explode"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "failed" and run.failed_at
    assert run.last_error.code == "server_error" and "GPU on fire" in run.last_error.message


def test_failure_mid_stream_is_an_error_event(http: TestClient, client: openai.OpenAI,
                                              upstream: UpstreamHandle) -> None:
    upstream.script("break midway", [{"content": "half an ans", "chunk_chars": 4,
                                      "error": {"status": 500, "message": "backend died", "mid_stream": True}}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "break midway"}])
    response = http.post(f"/v1/threads/{thread.id}/runs", json={"assistant_id": assistant.id, "stream": True})
    names = [e for e, _ in sse_events(response.text)]
    assert names[-4:] == ["thread.message.incomplete", "error", "thread.run.failed", "done"], names
    # The SDK reads past the error event (an ErrorObject, not wrapped) to the failed run.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="break midway again")
    seen: list[str] = []

    class Handler(openai.AssistantEventHandler):
        def on_event(self, event: Any) -> None:
            seen.append(type(event).__name__)

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         event_handler=Handler()) as stream:
        stream.until_done()
    assert seen[-1] == "ThreadRunFailed", seen  # the error event before it did not raise
    assert "backend died" in stream.get_final_run().last_error.message


def test_no_backend_says_what_to_set(make_app: Any) -> None:
    http = make_app(llm_base_url="")
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http, max_retries=0)
    assistant = client.beta.assistants.create(model="m")
    run = client.beta.threads.create_and_run_poll(assistant_id=assistant.id, poll_interval_ms=20,
                                                  thread={"messages": [{"role": "user", "content": "hi"}]})
    assert run.status == "failed"
    assert "SPINDLE_LLM_BASE_URL" in run.last_error.message


def test_max_completion_tokens_ends_incomplete(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("long answer", [{"content": "cut off here", "finish_reason": "length"}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "long answer"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   max_completion_tokens=20, poll_interval_ms=20)
    assert run.status == "incomplete"
    assert run.incomplete_details.reason == "max_completion_tokens"
    assert upstream.requests()[-1]["max_tokens"] == 20
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.status == "incomplete" and message.content[0].text.value == "cut off here"


def test_run_overrides_reach_the_model(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    assistant = client.beta.assistants.create(model="m", instructions="Base.", temperature=0.3)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"old {i}"} for i in range(5)])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, model="other-model", additional_instructions="Extra.",
        additional_messages=[{"role": "user", "content": "newest"}], top_p=0.5, poll_interval_ms=20,
        truncation_strategy={"type": "last_messages", "last_messages": 2})
    assert run.status == "completed" and run.model == "other-model" and run.temperature == 0.3
    sent = upstream.requests()[-1]
    assert sent["model"] == "other-model" and sent["top_p"] == 0.5 and sent["temperature"] == 0.3
    assert sent["messages"][0]["content"] == "Base.\n\nExtra."
    assert [m["content"] for m in sent["messages"][1:]] == ["old 4", "newest"]


def test_create_thread_and_run_stream_announces_thread(http: TestClient, client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="m")
    response = http.post("/v1/threads/runs", json={"assistant_id": assistant.id, "stream": True,
                                                   "thread": {"messages": [{"role": "user", "content": "hey"}]}})
    names = [e for e, _ in sse_events(response.text)]
    assert names[:3] == ["thread.created", "thread.run.created", "thread.run.queued"]
    assert names[-2:] == ["thread.run.completed", "done"]


def test_requires_action_expires(make_app: Any, upstream: UpstreamHandle) -> None:
    http = make_app(requires_action_expiry_s=0)
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http, max_retries=0)
    upstream.script("expire me", [{"tool_calls": [{"name": "get_weather", "arguments": "{}"}]}])
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "expire me"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "requires_action"
    http.portal.call(http.app.state.runtime.engine.expire_waiting)  # what the sweeper does every few seconds
    run = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert run.status == "expired"
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id,
                                                     tool_outputs=[{"tool_call_id": "x", "output": "y"}])
    step = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data[0]
    assert step.status == "expired"


def test_model_map_and_azure_upstream(make_app: Any, upstream: UpstreamHandle) -> None:
    # An Azure OpenAI upstream: deployment path, api-version query and api-key header.
    http = make_app(llm_base_url=upstream.root_url, llm_api_key="azure-key", llm_azure_api_version="2024-10-21",
                    llm_model_map="gpt-4=my-deployment")
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http, max_retries=0)
    assistant = client.beta.assistants.create(model="gpt-4")
    run = client.beta.threads.create_and_run_poll(assistant_id=assistant.id, poll_interval_ms=20,
                                                  thread={"messages": [{"role": "user", "content": "via azure"}]})
    assert run.status == "completed", run.last_error
    sent = upstream.book.requests()[-1]
    assert sent.path == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=2024-10-21" in sent.query
    assert sent.headers.get("api-key") == "azure-key"
    assert run.model == "gpt-4"  # the mapping is the server's business, not the client's


def test_two_processes_settling_one_orphaned_run(http: TestClient, client: openai.OpenAI, upstream: UpstreamHandle,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes may find the same run orphaned at once. The one that settles it second
    must not write its stale copy of the message back over the settled one (the message was
    found ``in_progress`` again after a kill -9 behind a load balancer)."""
    engine = http.app.state.runtime.engine  # type: ignore[attr-defined]
    store = http.app.state.runtime.store  # type: ignore[attr-defined]
    upstream.script("orphan me", [{"content": "partial text that never ends", "chunk_chars": 2, "delay_ms": 10,
                                   "hang": True}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "orphan me"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
        if message.role == "assistant" and message.content and message.content[0].text.value:
            break
        time.sleep(0.02)
    time.sleep(0.2)
    http.portal.call(engine.abandon, run.id)  # type: ignore[union-attr]  # as if its process died
    project = http.portal.call(engine._project_of, {"id": run.id})  # type: ignore[union-attr]
    stale = http.portal.call(store.get, "run", run.id, project)  # type: ignore[union-attr]
    assert stale["status"] == "in_progress"
    runtime = http.app.state.runtime  # type: ignore[attr-defined]
    read_message = store.get
    other_settled: list[str] = []

    async def get_then_other_settles(kind: str, object_id: str, *args: Any, **kwargs: Any) -> Any:
        found = await read_message(kind, object_id, *args, **kwargs)
        if kind == "message" and not other_settled:
            # Between this process reading the message and writing it back, the other
            # process settles the run: the run fails and the message is closed.
            other_settled.append(object_id)
            await engine._rebuild_messages(copy.deepcopy(stale), project)
            await Execution(runtime, copy.deepcopy(stale), project).stop(RunStopped("failed", RESTART_ERROR))
        return found

    monkeypatch.setattr(store, "get", get_then_other_settles)
    http.portal.call(engine.recover, False)  # type: ignore[union-attr]
    monkeypatch.undo()
    assert other_settled
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "failed"
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.status == "incomplete" and message.incomplete_details.reason == "run_failed"
    assert message.content[0].text.value.startswith("partial")
