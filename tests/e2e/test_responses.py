"""The Responses and Conversations APIs as users call them: the real server, the official SDK
(the versions that have ``client.responses``), OpenAI and Azure clients, the scripted upstream."""

from __future__ import annotations

import json
from typing import Any

import harness
import openai
import pytest

pytestmark = pytest.mark.min_sdk(1, 66)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}



def _typed(events: list[Any]) -> list[str]:
    """Every event validates as the SDK's own model for its ``type`` (the stream helper's
    events are subclasses of those), numbered 1, 2, 3... in order."""
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    adapter: Any = TypeAdapter(ResponseStreamEvent)
    for event in events:
        model = type(adapter.validate_python(event.model_dump(warnings=False)))
        assert isinstance(event, model) and model.__module__.startswith("openai.types.responses"), event.type
    assert [e.sequence_number for e in events] == list(range(events[0].sequence_number,
                                                               events[0].sequence_number + len(events)))
    return [e.type for e in events]


def test_create_retrieve_input_items_delete(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("three primary colours", [{"content": "Red, yellow and blue."}])
    response = openai_client.responses.create(
        model="gpt-4o", input="Name the three primary colours.", instructions="Answer in one line.",
        metadata={"ticket": "42"}, max_output_tokens=200, temperature=0.2, top_p=0.9)
    assert response.status == "completed" and response.output_text == "Red, yellow and blue."
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0
    assert (response.metadata, response.max_output_tokens, response.top_p) == ({"ticket": "42"}, 200, 0.9)
    sent = upstream.requests()[-1]
    assert sent["max_tokens"] == 200
    assert sent["temperature"] == 0.2 and sent["messages"][0] == {"role": "system", "content": "Answer in one line."}
    assert openai_client.responses.retrieve(response.id).model_dump() == response.model_dump()
    items = openai_client.responses.input_items.list(response.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [
        ("message", "user", "Name the three primary colours.")]
    openai_client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(response.id)


def test_stream_text_and_function_call(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("weather in Lima", [{"content": "Checking the weather.", "chunk_chars": 3,
                                         "tool_calls": [{"name": "get_weather", "arguments": '{"city": "Lima"}'}]}])
    with openai_client.responses.stream(model="gpt-4o", input="What's the weather in Lima?", tools=[WEATHER],
                                        tool_choice="auto") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = _typed(events)
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    text_done = kinds.index("response.output_item.done")
    assert kinds[text_done - 2:text_done] == ["response.output_text.done", "response.content_part.done"]
    call_added = kinds.index("response.output_item.added", text_done)
    assert kinds[call_added + 1] == "response.function_call_arguments.delta"
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    completed = events[-1].response
    assert [o.type for o in completed.output] == ["message", "function_call"]
    assert completed.output[1].name == "get_weather" and json.loads(completed.output[1].arguments) == {"city": "Lima"}
    stored = openai_client.responses.retrieve(final.id)
    assert [(o.id, o.type, o.status) for o in stored.output] == [(o.id, o.type, o.status) for o in completed.output]
    assert (stored.output_text, stored.output[1].arguments, stored.usage) == (
        completed.output_text, completed.output[1].arguments, completed.usage)
    assert final.id == completed.id and final.output_text == "Checking the weather."  # the helper's own copy


def test_function_round_trip_with_previous_response(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("weather in Quito", [{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Quito"}'},
                                                         {"name": "get_weather", "arguments": '{"city": "Cusco"}'}]}])
    upstream.script("QUITO-RAIN", [{"content": "Rain in Quito."}])
    first = openai_client.responses.create(model="gpt-4o", input="weather in Quito?", tools=[WEATHER],
                                           tool_choice={"type": "function", "name": "get_weather"},
                                           parallel_tool_calls=False)
    assert upstream.requests()[-1]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and first.parallel_tool_calls is False  # only the first call is kept
    with pytest.raises(openai.BadRequestError) as unanswered:
        openai_client.responses.create(model="gpt-4o", previous_response_id=first.id, input="go on")
    assert unanswered.value.body["param"] == "input"
    second = openai_client.responses.create(model="gpt-4o", previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "QUITO-RAIN"}])
    assert second.output_text == "Rain in Quito."
    messages = upstream.requests()[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]


def test_parse_with_a_pydantic_model(openai_client: Any, upstream: harness.Upstream) -> None:
    from pydantic import BaseModel

    class Event(BaseModel):
        name: str
        day: str

    upstream.script("science fair", [{"content": '{"name": "Science fair", "day": "Friday"}'}])
    parsed = openai_client.responses.parse(model="gpt-4o", input="Alice goes to the science fair on Friday.",
                                           text_format=Event)
    assert parsed.output_parsed == Event(name="Science fair", day="Friday")
    fmt = upstream.requests()[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Event"
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"name", "day"}
    assert parsed.text.format.type == "json_schema"


def test_failures_are_openai_errors(openai_client: Any, upstream: harness.Upstream) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.responses.create(model="gpt-4o", input="hi", previous_response_id="resp_missing")
    assert missing.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as bad_item:
        openai_client.responses.create(model="gpt-4o", input=[{"type": "message", "role": "user",
                                                                "content": [{"type": "input_audio"}]}])
    assert bad_item.value.body["param"] == "input[0].content[0].type"
    with pytest.raises(openai.BadRequestError) as bad_tool:
        openai_client.responses.create(model="gpt-4o", input="hi", tools=[{"type": "web_search"}])
    assert bad_tool.value.body["param"].startswith("tools")
    forgotten = openai_client.responses.create(model="gpt-4o", input="do not keep this", store=False)
    assert forgotten.output_text == "You said: do not keep this"
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(forgotten.id)
    done = openai_client.responses.create(model="gpt-4o", input="quick", background=True)
    harness.wait_until(lambda: openai_client.responses.retrieve(done.id).status == "completed", 20, "the background response")
    with pytest.raises(openai.BadRequestError) as finished:
        openai_client.responses.cancel(done.id)
    assert "completed" in finished.value.body["message"]


def test_max_output_tokens_makes_it_incomplete(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("long story", [{"content": "word " * 200}])
    response = openai_client.responses.create(model="gpt-4o", input="Tell a long story.", max_output_tokens=16)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


def test_background_stream_resume_and_cancel(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("background please", [{"content": "x" * 40, "chunk_chars": 2, "delay_ms": 100}])
    response = openai_client.responses.create(model="gpt-4o", input="background please", background=True)
    assert response.status == "queued" and response.background is True
    live = openai_client.responses.retrieve(response.id, stream=True)
    first = [next(iter(live)) for _ in range(5)]
    live.close()
    assert [e.sequence_number for e in first] == [1, 2, 3, 4, 5]
    resumed = openai_client.responses.retrieve(response.id, stream=True, starting_after=3)
    again = [next(iter(resumed)) for _ in range(2)]
    resumed.close()
    assert [e.model_dump() for e in again] == [e.model_dump() for e in first[3:5]]
    cancelled = openai_client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    assert openai_client.responses.retrieve(response.id).status == "cancelled"


@pytest.mark.min_sdk(1, 101)
def test_conversations(openai_client: Any, upstream: harness.Upstream) -> None:
    conversation = openai_client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "Remember the word PELICAN."}], metadata={"a": "1"})
    assert openai_client.conversations.retrieve(conversation.id).metadata == {"a": "1"}
    upstream.script("Which word", [{"content": "PELICAN."}])
    answer = openai_client.responses.create(model="gpt-4o", conversation=conversation.id, input="Which word?")
    assert answer.output_text == "PELICAN."
    assert [m["content"] for m in upstream.requests()[-1]["messages"]] == ["Remember the word PELICAN.", "Which word?"]
    listed = openai_client.conversations.items.list(conversation.id, order="asc")
    assert [i.type for i in listed.data] == ["message"] * 3 and listed.data[2].id == answer.output[0].id
    item = openai_client.conversations.items.retrieve(listed.data[1].id, conversation_id=conversation.id)
    assert item.content[0].text == "Which word?"
    openai_client.conversations.items.delete(listed.data[0].id, conversation_id=conversation.id)
    assert len(openai_client.conversations.items.list(conversation.id).data) == 2
    assert openai_client.conversations.update(conversation.id, metadata={"a": "2"}).metadata == {"a": "2"}
    assert openai_client.conversations.delete(conversation.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        openai_client.conversations.retrieve(conversation.id)
    with pytest.raises(openai.BadRequestError) as both:
        openai_client.responses.create(model="gpt-4o", input="x", conversation="conv_x", previous_response_id="r")
    assert both.value.body["param"] == "previous_response_id"


def test_azure_v1_paths_with_api_key(spindle_server: harness.SpindleServer, upstream: harness.Upstream) -> None:
    client = openai.OpenAI(base_url=f"{spindle_server.base_url}/openai/v1", api_key="sk-test", max_retries=0,
                           default_headers={"api-key": "sk-test"})
    response = client.responses.create(model="gpt-4o", input="hello azure v1")
    assert response.output_text == "You said: hello azure v1"
    assert client.responses.retrieve(response.id).id == response.id
    client.close()


def test_kill9_during_a_background_response(start_server: Any, upstream: harness.Upstream) -> None:
    server = start_server()
    client = harness.make_client("openai", server.base_url)
    upstream.script("crash during this", [{"content": "partial " * 100, "chunk_chars": 8, "delay_ms": 100}])
    response = client.responses.create(model="gpt-4o", input="crash during this", background=True)
    harness.wait_until(lambda: client.responses.retrieve(response.id).output, 20, "text to stream")
    server.kill9()
    server.start()
    failed = harness.wait_until(lambda: (r := client.responses.retrieve(response.id)).status == "failed" and r, 20,
                   "the restart to settle the response")
    assert failed.error.code == "server_error" and "restarted" in failed.error.message
    assert failed.output[0].content[0].text.startswith("partial")  # what was streamed is kept
    upstream.script("after the crash", [{"content": "fine"}])
    assert client.responses.create(model="gpt-4o", input="after the crash").output_text == "fine"
    client.close()


def test_kill9_during_a_store_false_response_leaves_nothing(start_server: Any, upstream: harness.Upstream) -> None:
    """The process answering a store=false response dies mid-stream: the restart settles the
    run and purges everything it left (run, thread, messages, events, the purge marker)."""
    import sqlite3

    server = start_server()
    database = server.data_dir / "spindle.db"
    if not database.exists():
        pytest.skip("the rows are inspected in the SQLite store (SPINDLE_TEST_BACKENDS is set)")

    def rows(response_id: str) -> dict[str, int]:
        with sqlite3.connect(database, timeout=10) as db:
            objects = db.execute("SELECT count(*) FROM objects WHERE id IN (?, ?)",
                                 (response_id, f"purge_{response_id}")).fetchone()[0]
            events = db.execute("SELECT count(*) FROM events WHERE run_id = ?", (response_id,)).fetchone()[0]
        return {"objects": objects, "events": events}

    client = harness.make_client("openai", server.base_url)
    upstream.script("forget this crash", [{"content": "partial " * 100, "chunk_chars": 8, "delay_ms": 100}])
    response_id = ""
    try:
        with client.responses.stream(model="gpt-4o", input="forget this crash", store=False) as stream:
            for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                if event.type == "response.output_text.delta":
                    before = rows(response_id)
                    assert before["objects"] == 2 and before["events"] > 0  # the run, its marker, its log
                    server.kill9()  # before the answer ends: no purge ran
                    break
    except (openai.APIConnectionError, openai.APIError):
        pass  # the connection died with the server
    assert response_id and rows(response_id)["objects"] == 2
    server.start()
    harness.wait_until(lambda: rows(response_id) == {"objects": 0, "events": 0}, 20,
                       "the restart to purge the response")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response_id)
    client.close()


def test_file_search_cites_the_file(openai_client: Any, upstream: harness.Upstream, tmp_path: Any) -> None:
    upstream.script("shares outstanding", [
        {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": ["shares outstanding Q3"]})}]},
        {"content": "There were 48,213,772 shares {{marker:0}} at the end of Q3.", "chunk_chars": 3}])
    store = openai_client.vector_stores.create(name="filings")
    (tmp_path / "q3.txt").write_text("Quarterly filing Q3. Shares outstanding at quarter end: 48,213,772.\n")
    (tmp_path / "minutes.txt").write_text("Board minutes. The board approved a dividend of 0.42 dollars per share.\n")
    handles = [open(tmp_path / name, "rb") for name in ("q3.txt", "minutes.txt")]
    batch = openai_client.vector_stores.file_batches.upload_and_poll(vector_store_id=store.id, files=handles)
    for handle in handles:
        handle.close()
    assert batch.file_counts.completed == 2
    q3 = next(f for f in openai_client.files.list() if f.filename == "q3.txt")
    tools = [{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 5}]
    with openai_client.responses.stream(model="gpt-4o", input="How many shares outstanding last quarter?",
                                        tools=tools, include=["file_search_call.results"]) as stream:
        events = list(stream)
    kinds = _typed(events)
    searched = kinds.index("response.file_search_call.in_progress")
    assert kinds[searched - 1:searched + 2] == ["response.output_item.added", "response.file_search_call.in_progress",
                                               "response.file_search_call.searching"]
    assert "response.file_search_call.completed" in kinds and "response.output_text.annotation.added" in kinds
    response = events[-1].response
    call, message = response.output
    assert call.type == "file_search_call" and call.status == "completed" and call.queries == ["shares outstanding Q3"]
    assert call.results[0].file_id == q3.id and call.results[0].filename == "q3.txt" and "48,213,772" in call.results[0].text
    text = message.content[0]
    assert text.text == "There were 48,213,772 shares  at the end of Q3."  # the marker is an annotation now
    [note] = text.annotations
    assert (note.type, note.file_id, note.filename, note.index) == ("file_citation", q3.id, "q3.txt",
                                                                    len("There were 48,213,772 shares "))
    stored = openai_client.responses.retrieve(response.id)
    assert stored.output[1].content[0].annotations == text.annotations and stored.output[0].results is not None
    # Without include the results are not shown; an unknown store is a 404 naming it.
    upstream.script("outstanding now", [
        {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": ["shares now"]})}]},
        {"content": "The same."}])
    plain = openai_client.responses.create(model="gpt-4o", input="How many shares outstanding now?", tools=tools)
    assert plain.output[0].type == "file_search_call" and plain.output[0].results is None
    asked = openai_client.responses.retrieve(plain.id, include=["file_search_call.results"])
    assert asked.output[0].results is not None  # include on the read shows them too
    with pytest.raises(openai.BadRequestError) as bad_include:
        openai_client.responses.retrieve(plain.id, include=["nope"])
    assert bad_include.value.body["param"] == "include"
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.responses.create(model="gpt-4o", input="x", tools=[
            {"type": "file_search", "vector_store_ids": ["vs_missing"]}])
    assert missing.value.body["param"] == "tools[0].vector_store_ids[0]"


def test_max_tool_calls_limits_built_in_calls(openai_client: Any, upstream: harness.Upstream, tmp_path: Any) -> None:
    store = openai_client.vector_stores.create(name="limits")
    (tmp_path / "facts.txt").write_text("The lighthouse was built in 1874 and painted red in 1901.\n")
    with open(tmp_path / "facts.txt", "rb") as handle:
        openai_client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=handle)
    search = {"name": "file_search", "arguments": json.dumps({"queries": ["lighthouse"]})}
    upstream.script("lighthouse history", [{"tool_calls": [search, search]}, {"content": "Built in 1874."}])
    response = openai_client.responses.create(
        model="gpt-4o", input="lighthouse history?", max_tool_calls=1,
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}])
    assert [(o.type, o.status) for o in response.output] == [
        ("file_search_call", "completed"), ("file_search_call", "incomplete"), ("message", "completed")]
    assert response.max_tool_calls == 1 and response.output_text == "Built in 1874."
    last = upstream.requests()[-1]
    assert "tools" not in last or not last["tools"]  # the limit is reached: nothing more is offered
    assert "max_tool_calls" in [m for m in last["messages"] if m["role"] == "tool"][-1]["content"]


def test_file_search_filters_reach_the_search(openai_client: Any, upstream: harness.Upstream, tmp_path: Any) -> None:
    store = openai_client.vector_stores.create(name="regions")
    for region, text in (("eu", "Revenue in the EU region was 12 million euros."),
                         ("us", "Revenue in the US region was 30 million dollars.")):
        (tmp_path / f"{region}.txt").write_text(text + "\n")
        with open(tmp_path / f"{region}.txt", "rb") as handle:
            uploaded = openai_client.files.create(file=handle, purpose="assistants")
        openai_client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=uploaded.id,
                                                          attributes={"region": region})
    search = {"name": "file_search", "arguments": json.dumps({"queries": ["revenue region"]})}
    upstream.script("revenue by region", [{"tool_calls": [search]}, {"content": "See the EU file."}])
    eu_only = {"type": "eq", "key": "region", "value": "eu"}
    response = openai_client.responses.create(
        model="gpt-4o", input="revenue by region?", include=["file_search_call.results"],
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "filters": eu_only}])
    assert response.tools[0].filters.model_dump(exclude_none=True) == eu_only
    results = response.output[0].results
    assert results and {r.filename for r in results} == {"eu.txt"}  # the US file matched the query too
    tool_message = [m for m in upstream.requests()[-1]["messages"] if m["role"] == "tool"][-1]["content"]
    assert "12 million" in tool_message and "30 million" not in tool_message
    with pytest.raises(openai.BadRequestError) as bad:
        openai_client.responses.create(model="gpt-4o", input="x", tools=[
            {"type": "file_search", "vector_store_ids": [store.id], "filters": {"type": "eq", "value": "eu"}}])
    assert bad.value.body["param"] == "tools[0].filters.key"
