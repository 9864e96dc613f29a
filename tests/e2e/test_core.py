"""The core, as users run it: the real server, the official SDK (3.x, 1.40.x and 1.20.0 — this
file runs under each), OpenAI and Azure clients, and the scripted upstream model."""

from __future__ import annotations

import json
import time
from typing import Any

import harness
import openai
import pytest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def wait_for(client: Any, thread_id: str, run_id: str, statuses: set[str], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        run = client.beta.threads.runs.retrieve(thread_id=thread_id, run_id=run_id)
        if run.status in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {run.status if run else None}")


def test_assistant_lifecycle_and_pagination(openai_client: Any) -> None:
    created = [
        openai_client.beta.assistants.create(
            model="gpt-4-turbo", name=f"a{i}", instructions="hi", metadata={"n": str(i)}
        )
        for i in range(3)
    ]
    fetched = openai_client.beta.assistants.retrieve(created[0].id)
    assert fetched.name == "a0" and fetched.model == "gpt-4-turbo" and fetched.metadata == {"n": "0"}
    updated = openai_client.beta.assistants.update(created[0].id, name="renamed", description="d")
    assert updated.name == "renamed" and updated.description == "d" and updated.instructions == "hi"
    page = openai_client.beta.assistants.list(limit=2, order="asc", after=created[0].id)
    assert [a.id for a in page.data] == [created[1].id, created[2].id]
    newest_first = [a.id for a in openai_client.beta.assistants.list(limit=100)]
    assert newest_first.index(created[2].id) < newest_first.index(created[0].id)
    everything = [a.id for a in openai_client.beta.assistants.list(limit=1)]  # auto-pagination over has_more
    assert {c.id for c in created} <= set(everything)
    deleted = openai_client.beta.assistants.delete(created[0].id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        openai_client.beta.assistants.retrieve(created[0].id)


def test_polling_run_as_in_the_docs(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("3x + 11 = 14", [{"content": "x = 1"}])
    assistant = openai_client.beta.assistants.create(
        instructions="You are an AI assistant that can write code to help answer math questions",
        model="gpt-4",
    )
    thread = openai_client.beta.threads.create(
        messages=[
            {"role": "user", "content": "I need to solve the equation `3x + 11 = 14`. Can you help me?"}
        ]
    )
    run = openai_client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    run = wait_for(openai_client, thread.id, run.id, {"completed", "failed"})
    assert run.status == "completed", run.last_error
    messages = openai_client.beta.threads.messages.list(thread_id=thread.id)
    assert messages.data[0].role == "assistant" and messages.data[0].content[0].text.value == "x = 1"
    assert messages.data[1].content[0].text.value.startswith("I need to solve")
    listed = openai_client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id)
    assert [m.id for m in listed.data] == [messages.data[0].id]
    runs = openai_client.beta.threads.runs.list(thread_id=thread.id)
    assert [r.id for r in runs.data] == [run.id]


def test_create_and_poll_helpers(openai_client: Any) -> None:
    assistant = openai_client.beta.assistants.create(model="m")
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "poll me"}])
    started = time.monotonic()
    run = openai_client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    # The server's openai-poll-after-ms header keeps the helper from sleeping a whole second.
    assert run.status == "completed" and time.monotonic() - started < 0.9


def test_stream_with_event_handler(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("stream this", [{"content": "Hello Jane Doe, here you go.", "chunk_chars": 4}])
    assistant = openai_client.beta.assistants.create(model="gpt-4-turbo", name="Streamer")
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "stream this"}])
    seen: dict[str, list[Any]] = {"created": [], "deltas": [], "done": [], "events": []}

    class EventHandler(openai.AssistantEventHandler):
        def on_event(self, event: Any) -> None:
            seen["events"].append(event.event)

        def on_text_created(self, text: Any) -> None:
            seen["created"].append(text)

        def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            seen["deltas"].append(delta.value)

        def on_message_done(self, message: Any) -> None:
            seen["done"].append(message.content[0].text.value)

    with openai_client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="Please address the user as Jane Doe. The user has a premium account.",
        event_handler=EventHandler(),
    ) as stream:
        stream.until_done()
    assert len(seen["created"]) == 1
    assert "".join(seen["deltas"]) == "Hello Jane Doe, here you go."
    assert seen["done"] == ["Hello Jane Doe, here you go."]
    assert seen["events"][0] == "thread.run.created" and seen["events"][-1] == "thread.run.completed"
    assert upstream.requests()[-1]["messages"][0]["content"].startswith("Please address the user as Jane Doe")


def test_function_tools_polling(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script(
        "weather in two cities",
        [
            {
                "tool_calls": [
                    {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
                ]
            },
            {"content": "Both: {{last_tool}}"},
        ],
    )
    assistant = openai_client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = openai_client.beta.threads.create(
        messages=[{"role": "user", "content": "weather in two cities"}]
    )
    run = openai_client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    run = wait_for(openai_client, thread.id, run.id, {"requires_action", "failed"})
    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Tokyo"]
    run = openai_client.beta.threads.runs.submit_tool_outputs(
        thread_id=thread.id,
        run_id=run.id,
        tool_outputs=[
            {"tool_call_id": c.id, "output": json.loads(c.function.arguments)["city"] + " 20C"} for c in calls
        ],
    )
    run = wait_for(openai_client, thread.id, run.id, {"completed", "failed"})
    assert run.status == "completed"
    answer = openai_client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert answer.content[0].text.value == "Both: Tokyo 20C"


def test_function_tools_streaming(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script(
        "streamed weather",
        [
            {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Lima"}'}], "chunk_chars": 2},
            {"content": "It is {{last_tool}}."},
        ],
    )
    assistant = openai_client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "streamed weather"}])
    calls: list[Any] = []

    class Handler(openai.AssistantEventHandler):
        def on_tool_call_done(self, tool_call: Any) -> None:
            calls.append(tool_call)

    with openai_client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=Handler()
    ) as stream:
        stream.until_done()
    run = stream.current_run
    assert run.status == "requires_action"
    assert (
        calls
        and calls[-1].function.name == "get_weather"
        and json.loads(calls[-1].function.arguments) == {"city": "Lima"}
    )
    texts: list[str] = []

    class After(openai.AssistantEventHandler):
        def on_message_done(self, message: Any) -> None:
            texts.append(message.content[0].text.value)

    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
    with openai_client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": call_id, "output": "warm"}],
        event_handler=After(),
    ) as stream2:
        stream2.until_done()
    assert texts == ["It is warm."]


def test_file_upload_and_download(openai_client: Any, tmp_path: Any) -> None:
    payload = bytes(range(256)) * 40
    path = tmp_path / "data.bin"
    path.write_bytes(payload)
    with open(path, "rb") as handle:
        uploaded = openai_client.files.create(file=handle, purpose="assistants")
    assert (
        uploaded.bytes == len(payload) and uploaded.filename == "data.bin" and uploaded.id.startswith("file-")
    )
    assert openai_client.files.retrieve(uploaded.id).purpose == "assistants"
    assert openai_client.files.content(uploaded.id).read() == payload
    assert uploaded.id in [f.id for f in openai_client.files.list(purpose="assistants")]
    assert uploaded.id not in [f.id for f in openai_client.files.list(purpose="batch")]
    assert openai_client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        openai_client.files.content(uploaded.id)


@harness.requires_sdk(1, 21, reason="v2 shape")
def test_cancel_and_one_active_run(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("never ending", [{"content": "...", "hang": True}])
    assistant = openai_client.beta.assistants.create(model="m")
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "never ending"}])
    run = openai_client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError):
        openai_client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    openai_client.beta.threads.runs.cancel(run_id=run.id, thread_id=thread.id)
    assert wait_for(openai_client, thread.id, run.id, {"cancelled"}).status == "cancelled"


@pytest.mark.max_sdk(1, 20)
def test_v1_seed_snippet_with_file_ids(
    client_kind: str, spindle_server: harness.SpindleServer, tmp_path: Any
) -> None:
    client = harness.make_client(client_kind, spindle_server.base_url, api_version="2024-05-01-preview")
    speech = tmp_path / "speech.py"
    speech.write_text("print('four score')\n")
    with open(speech, "rb") as handle:
        file = client.files.create(file=handle, purpose="assistants")
    assistant = client.beta.assistants.create(
        instructions="You are an AI assistant that can write code to help answer math questions.",
        model="gpt-4-1106-preview",
        tools=[{"type": "code_interpreter"}],
        file_ids=[file.id],
    )
    assert assistant.file_ids == [file.id]
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "I need to solve the equation `3x + 11 = 14`. Can you help me?",
                "file_ids": [file.id],
            }
        ]
    )
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.file_ids == [file.id]
    assert [f.id for f in client.beta.assistants.files.list(assistant_id=assistant.id)] == [file.id]
    client.close()


def test_kill9_mid_run_loses_nothing(start_server: Any, upstream: harness.Upstream) -> None:
    server = start_server()
    client = harness.make_client("openai", server.base_url)
    upstream.script(
        "crash during this",
        [{"content": "partial answer that never ends", "chunk_chars": 2, "delay_ms": 20, "hang": True}],
    )
    assistant = client.beta.assistants.create(model="m", name="survivor")
    uploaded = client.files.create(file=("keep.txt", b"keep me"), purpose="assistants")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "crash during this"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = client.beta.threads.messages.list(thread_id=thread.id).data
        if messages[0].role == "assistant" and messages[0].content and messages[0].content[0].text.value:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    server.kill9()
    client.close()
    server.restart()
    client = harness.make_client("openai", server.base_url)
    after = client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id)
    assert after.status == "failed" and after.last_error.code == "server_error"
    assert "restarted" in after.last_error.message
    assert client.beta.assistants.retrieve(assistant.id).name == "survivor"
    assert client.files.content(uploaded.id).read() == b"keep me"
    messages = client.beta.threads.messages.list(thread_id=thread.id).data
    assert messages[0].status == "incomplete" and messages[0].content[0].text.value.startswith("partial")
    assert all(
        s.status != "in_progress"
        for s in client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id)
    )
    # The thread is usable again at once.
    upstream.script("after the crash", [{"content": "back again"}])
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="after the crash")
    run2 = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert wait_for(client, thread.id, run2.id, {"completed", "failed"}).status == "completed"
    client.close()


def test_other_project_sees_nothing(start_server: Any, client_kind: str) -> None:
    server = start_server(env={"SPINDLE_API_KEYS": "key-one:alpha,key-two:beta"})
    mine = harness.make_client(client_kind, server.base_url, api_key="key-one")
    theirs = harness.make_client(client_kind, server.base_url, api_key="key-two")
    assistant = mine.beta.assistants.create(model="m")
    thread = mine.beta.threads.create(messages=[{"role": "user", "content": "private"}])
    file = mine.files.create(file=("p.txt", b"private"), purpose="assistants")
    assert theirs.beta.assistants.list().data == [] and theirs.files.list().data == []
    for call in (
        lambda: theirs.beta.assistants.retrieve(assistant.id),
        lambda: theirs.beta.threads.retrieve(thread.id),
        lambda: theirs.files.retrieve(file.id),
        lambda: theirs.beta.threads.messages.list(thread_id=thread.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    stranger = harness.make_client(client_kind, server.base_url, api_key="nope")
    with pytest.raises(openai.AuthenticationError):
        stranger.beta.assistants.list()
    for client in (mine, theirs, stranger):
        client.close()


def test_disconnecting_client_stops_its_stream_not_the_run(spindle_server: harness.SpindleServer,
                                                           upstream: harness.Upstream) -> None:
    import httpx

    upstream.script("slow stream", [{"content": "a b c d e f g h i j", "chunk_chars": 1, "delay_ms": 30}])
    client = harness.make_client("openai", spindle_server.base_url)
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "slow stream"}])
    with httpx.Client(base_url=f"{spindle_server.base_url}/v1", timeout=30) as http:
        with http.stream("POST", f"/threads/{thread.id}/runs", json={"assistant_id": assistant.id, "stream": True},
                         headers={"authorization": "Bearer sk"}) as response:
            lines = response.iter_lines()
            first = next(lines)
            assert first == "event: thread.run.created"
            run_id = json.loads(next(lines)[6:])["id"]
        # The response is closed here, mid-run.
    run = wait_for(client, thread.id, run_id, {"completed", "failed"})
    assert run.status == "completed"
    answer = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert answer.content[0].text.value == "a b c d e f g h i j"
    client.close()
