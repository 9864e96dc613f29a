"""The Responses API in process: the real app, the real SDK (3.x), the scripted upstream."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pydantic
import pytest
from fastapi.testclient import TestClient
from openai.types.responses import Response, ResponseStreamEvent

from tests.upstream.server import UpstreamHandle

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


def sse(text: str) -> list[dict[str, Any]]:
    """Every frame of a Responses stream, checked: its event line names the data's type."""
    out = []
    for frame in text.strip().split("\n\n"):
        head, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        _EVENT.validate_python(event)  # the SDK's own model for that event type
        out.append(event)
    return out


def test_text_response_non_streaming(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("capital of France", [{"content": "Paris.", "usage": {"prompt_tokens": 11, "completion_tokens": 2}}])
    response = client.responses.create(model="m", input="What is the capital of France?", instructions="Be brief.",
                                       metadata={"k": "v"}, temperature=0.5)
    assert response.status == "completed" and response.output_text == "Paris."
    assert response.id.startswith("resp_") and response.object == "response" and response.metadata == {"k": "v"}
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (11, 2)
    assert response.instructions == "Be brief." and response.temperature == 0.5
    sent = upstream.requests()[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is the capital of France?"}]
    again = client.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()


def test_stream_events_in_openai_order(http: TestClient, upstream: UpstreamHandle) -> None:
    upstream.script("count", [{"content": "one two three", "chunk_chars": 4}])
    body = http.post("/v1/responses", json={"model": "m", "input": "count", "stream": True})
    assert body.status_code == 200
    events = sse(body.text)
    kinds = [e["type"] for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(1, len(events) + 1))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "one two three"
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "one two three" and final.status == "completed"
    # Resuming the stream from any point gives the same events from there.
    resumed = http.get(f"/v1/responses/{final.id}", params={"stream": "true", "starting_after": 3})
    assert sse(resumed.text) == events[3:]


def test_function_call_then_output(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("weather in Oslo", [{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}]}])
    upstream.script("sunny, 20C", [{"content": "It is sunny in Oslo."}])
    first = client.responses.create(model="m", input="What is the weather in Oslo?", tools=[WEATHER])
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    second = client.responses.create(model="m", previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 20C"}])
    assert second.output_text == "It is sunny in Oslo." and second.previous_response_id == first.id
    sent = upstream.requests()[-1]["messages"]
    assert sent[0] == {"role": "user", "content": "What is the weather in Oslo?"}
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 20C"}
    items = client.responses.input_items.list(second.id).data
    assert [i.type for i in items] == ["function_call_output"]


def test_errors_name_the_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="m", input="hi", previous_response_id="resp_nope")
    assert missing.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="m", input=[{"type": "message", "role": "robot", "content": "x"}])
    assert bad.value.body["param"] == "input[0].role"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as orphan:
        client.responses.create(model="m", input=[{"type": "function_call_output", "call_id": "c1", "output": "x"}])
    assert orphan.value.body["param"] == "input[0].call_id"  # type: ignore[index]


def test_store_false_keeps_nothing(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    response = client.responses.create(model="m", input="forget me", store=False)
    assert response.output_text == "You said: forget me" and response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_background_and_cancel(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("slowly", [{"content": "a b c d e f g h", "chunk_chars": 1, "delay_ms": 200}])
    response = client.responses.create(model="m", input="answer slowly", background=True)
    assert response.status == "queued" and response.background is True
    deadline = time.monotonic() + 10
    while client.responses.retrieve(response.id).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(response.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(response.id)


def test_truncation_auto_drops_the_oldest_items_disabled_sends_all(client: openai.OpenAI,
                                                                   upstream: UpstreamHandle) -> None:
    # Above the engine's context estimate (~100k tokens at ~4 characters a token).
    long_text = "filler words " * 40_000
    upstream.script("first question", [{"content": "first answer"}])
    first = client.responses.create(model="m", input=[
        {"role": "user", "content": long_text}, {"role": "user", "content": "first question"}])
    for truncation, expected in (("auto", 3), ("disabled", 4)):
        upstream.script(f"follow-up {truncation}", [{"content": "ok"}])
        client.responses.create(model="m", previous_response_id=first.id, input=f"follow-up {truncation}",
                                truncation=truncation)  # type: ignore[arg-type]
        sent = upstream.requests()[-1]["messages"]
        assert len(sent) == expected, [m["content"][:20] for m in sent]
        assert (sent[0]["content"] == long_text) is (truncation == "disabled")
        assert sent[-1]["content"] == f"follow-up {truncation}"


def test_conversation_reads_and_extends(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": "My name is Ada."}],
                                               metadata={"topic": "names"})
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "names"}
    upstream.script("What is my name", [{"content": "Your name is Ada."}])
    first = client.responses.create(model="m", conversation=conversation.id, input="What is my name?")
    assert first.output_text == "Your name is Ada." and first.conversation is not None
    assert first.conversation.id == conversation.id
    assert upstream.requests()[-1]["messages"] == [{"role": "user", "content": "My name is Ada."},
                                                   {"role": "user", "content": "What is my name?"}]
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(i.type, getattr(i, "role", None)) for i in items] == [
        ("message", "user"), ("message", "user"), ("message", "assistant")]
    assert items[2].id == first.output[0].id
    client.responses.create(model="m", conversation=conversation.id, input="again")
    sent = upstream.requests()[-1]["messages"]
    assert [m["content"] for m in sent] == ["My name is Ada.", "What is my name?", "Your name is Ada.", "again"]
    # Deleting an item (one the response wrote) takes it out of what the next response reads.
    client.conversations.items.delete(items[2].id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(items[2].id, conversation_id=conversation.id)
    remaining = client.conversations.items.list(conversation.id, order="asc").data
    assert [i.id for i in remaining][:2] == [items[0].id, items[1].id] and items[2].id not in {i.id for i in remaining}
    assert len(remaining) == 4  # Ada, the question, "again" and the second answer
    added = client.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "extra"}]}])
    assert client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id).id == added.data[0].id
    updated = client.conversations.update(conversation.id, metadata={"topic": "other"})
    assert updated.metadata == {"topic": "other"}
    assert client.conversations.delete(conversation.id).deleted is True
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.create(model="m", conversation=conversation.id, input="hi")
    assert gone.value.body["param"] == "conversation"  # type: ignore[index]


def test_parse_passes_the_json_schema(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    class City(pydantic.BaseModel):
        name: str
        population: int

    upstream.script("biggest city", [{"content": '{"name": "Tokyo", "population": 37000000}'}])
    parsed = client.responses.parse(model="m", input="The biggest city?", text_format=City)
    assert parsed.output_parsed == City(name="Tokyo", population=37000000)
    sent = upstream.requests()[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"
    assert sent["json_schema"]["strict"] is True and sent["json_schema"]["schema"]["required"] == ["name", "population"]


def test_sdk_stream_helper_and_azure_v1(http: TestClient, upstream: UpstreamHandle) -> None:
    azure = openai.OpenAI(base_url="http://testserver/openai/v1", api_key="sk-test", http_client=http, max_retries=0,
                          default_headers={"api-key": "sk-test"})
    upstream.script("weather in Rome", [{"content": "Let me check.", "tool_calls": [
        {"name": "get_weather", "arguments": '{"city": "Rome"}'}]}])
    with azure.responses.stream(model="m", input="weather in Rome?", tools=[WEATHER]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert [o.type for o in final.output] == ["message", "function_call"]
    assert final.output_text == "Let me check."
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.completed")
    assert azure.responses.delete(final.id) is None  # the SDK reads no body; OpenAI's is below
    assert http.delete(f"/openai/v1/responses/{final.id}", headers={"api-key": "sk-test"}).status_code == 404
    with pytest.raises(openai.NotFoundError):
        azure.responses.retrieve(final.id)


def test_input_tokens_and_unknown_item_reference(client: openai.OpenAI) -> None:
    counted = client.responses.input_tokens.count(model="m", input="a" * 400)
    assert counted.object == "response.input_tokens" and 90 <= counted.input_tokens <= 130
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="m", input=[{"type": "item_reference", "id": "msg_nope"}])
    assert bad.value.body["param"] == "input[0].id"  # type: ignore[index]


def test_projects_keep_responses_and_conversations_apart(make_app: Any) -> None:
    http = make_app(api_keys="key-a:alpha,key-b:beta")
    a = openai.OpenAI(base_url="http://testserver/v1", api_key="key-a", http_client=http, max_retries=0)
    b = openai.OpenAI(base_url="http://testserver/v1", api_key="key-b", http_client=http, max_retries=0)
    response = a.responses.create(model="m", input="mine")
    conversation = a.conversations.create()
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as chained:
        b.responses.create(model="m", input="x", previous_response_id=response.id)
    assert chained.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        b.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="m", input="x", conversation=conversation.id)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key="nope", http_client=http,
                      max_retries=0).responses.retrieve(response.id)


def test_store_false_stream_keeps_nothing_either(http: TestClient, client: openai.OpenAI) -> None:
    body = http.post("/v1/responses", json={"model": "m", "input": "stream and forget", "stream": True, "store": False})
    events = sse(body.text)
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["store"] is False
    response_id = events[0]["response"]["id"]
    deadline = time.monotonic() + 5
    while http.get(f"/v1/responses/{response_id}").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.02)  # the purge runs as the stream closes
    assert http.get(f"/v1/responses/{response_id}").status_code == 404
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="m", input="x", background=True, store=False)
    assert refused.value.body["param"] == "background"  # type: ignore[index]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format"),
    ({"model": "m", "input": "x", "temperature": 3}, "temperature"),
    ({"model": "m", "input": 5}, "input"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": 1, "output": "x"}]}, "input[0].call_id"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"model": "m", "input": "x", "include": ["message.output_text.logprobs"]}, "include"),
    ({"input": "x"}, "model"),
    ({"model": "m", "input": []}, "input"),
])
def test_bad_requests_are_400_naming_the_param(http: TestClient, body: dict[str, Any], param: str) -> None:
    answer = http.post("/v1/responses", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"].startswith(param), answer.json()


def test_delete_while_running_and_upstream_failure(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("long one", [{"content": "z" * 200, "chunk_chars": 1, "delay_ms": 50}])
    running = client.responses.create(model="m", input="a long one", background=True)
    client.responses.delete(running.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(running.id)
    upstream.script("break it", [{"error": {"status": 500, "message": "upstream down", "type": "server_error"}}])
    failed = client.responses.create(model="m", input="break it")
    assert failed.status == "failed" and failed.error is not None and failed.error.code
    streamed = client.responses.create(model="m", input="break it", stream=True)
    kinds = [event.type for event in streamed]
    assert kinds == ["response.created", "response.in_progress", "error", "response.failed"]


def test_a_call_to_a_function_not_offered_is_not_an_output_item(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("use a tool", [{"tool_calls": [{"name": "launch_rockets", "arguments": "{}"}]},
                                   {"content": "I cannot do that."}])
    response = client.responses.create(model="m", input="use a tool", tools=[WEATHER])
    assert [o.type for o in response.output] == ["message"] and response.output_text == "I cannot do that."
    tool_message = upstream.requests()[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "no tool named 'launch_rockets'" in tool_message["content"]
    follow_up = client.responses.create(model="m", input="thanks", previous_response_id=response.id)
    assert follow_up.status == "completed"  # no unanswered call left behind in the chain


def test_item_references_and_roles(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("first question", [{"content": "The first answer."}])
    first = client.responses.create(model="m", input="first question")
    second = client.responses.create(model="m", input=[
        {"type": "message", "role": "developer", "content": "Answer in French."},
        {"type": "item_reference", "id": first.output[0].id},
        {"role": "user", "content": [{"type": "input_text", "text": "and now?"},
                                     {"type": "input_image", "image_url": "https://example.com/a.png"}]}])
    assert second.status == "completed"
    sent = upstream.requests()[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Answer in French."}
    assert sent[1] == {"role": "assistant", "content": "The first answer."}
    assert sent[2]["content"][1] == {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in listed] == ["message"] * 3 and listed[1].id == first.output[0].id
    page = client.responses.input_items.list(second.id, order="asc", limit=1, after=listed[0].id)
    assert [i.id for i in page.data] == [listed[1].id] and page.has_more


def test_citation_markers_become_annotations_across_deltas() -> None:
    from spindle.responses.render import strip_markers

    names = {"file-a": "a.txt"}
    marker = "【0:0†a.txt】"
    raw = f"Fact one{marker}. Fact two{marker}!"
    first, second = raw[:20], raw[20:]  # the second marker is in the second delta
    spans = [(raw.index(marker), raw.index(marker) + len(marker)), (raw.rindex(marker), len(raw) - 1)]
    notes = [{"type": "file_citation", "start_index": a, "end_index": b, "file_citation": {"file_id": "file-a"}}
             for a, b in spans]
    text1, found1 = strip_markers(first, 0, 0, notes[:1], names)
    text2, found2 = strip_markers(second, len(first), len(text1), notes[1:], names)
    assert text1 + text2 == "Fact one. Fact two!"
    assert [n["index"] for n in found1 + found2] == [len("Fact one"), len("Fact one. Fact two")]
    assert found1[0] == {"type": "file_citation", "file_id": "file-a", "filename": "a.txt", "index": 8}
    # Spans outside the segment, overlapping ones and other annotation types leave the text alone.
    bad = [{"type": "file_citation", "start_index": 50, "end_index": 60, "file_citation": {"file_id": "x"}},
           {"type": "file_path", "start_index": 0, "end_index": 4, "file_path": {"file_id": "y"}}]
    assert strip_markers("plain text", 0, 0, bad, names) == ("plain text", [])


def test_a_settled_response_keeps_its_output_for_the_chains_after_it(client: openai.OpenAI, http: TestClient,
                                                                     upstream: UpstreamHandle) -> None:
    """The next turn reads the settled response's output from its row, not by replaying its
    log again (bench/bench_responses_chain.py); what the model reads is the same."""
    store = http.app.state.runtime.store  # type: ignore[attr-defined]
    upstream.script("count to three", [{"content": "one two three", "chunk_chars": 2}])
    first = client.responses.create(model="m", input="count to three")
    assert "_output" not in http.portal.call(store.get, "run", first.id, "default")  # type: ignore[union-attr]
    upstream.script("and again", [{"content": "again: one two three"}])
    second = client.responses.create(model="m", input="and again", previous_response_id=first.id)
    row = http.portal.call(store.get, "run", first.id, "default")  # type: ignore[union-attr]
    assert [i["id"] for i in row["_output"]] == [item.id for item in first.output]
    assert row["_output"][0]["content"][0]["text"] == "one two three"
    assert "_output" not in http.get(f"/v1/responses/{first.id}").json()  # never shown
    # A third turn reads it from the row: the model still gets the whole chain in order.
    upstream.script("once more", [{"content": "done"}])
    client.responses.create(model="m", input="once more", previous_response_id=second.id)
    sent = [m["content"] for m in upstream.requests()[-1]["messages"]]
    assert sent == ["count to three", "one two three", "and again", "again: one two three", "once more"]
