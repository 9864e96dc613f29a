"""The file_search tool in real runs: scripted upstream model, real stores, citations, streaming."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from typing_extensions import override

from spindle.tools.file_search import citations
from tests.retrieval.conftest import upload

CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
SHARES = "Q3 report: the company had 4,213,000 shares outstanding last quarter."


def _store_with(client: openai.OpenAI, files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    ids = {name: upload(client, name, data) for name, data in files.items()}
    vs = client.vector_stores.create(name="kb", file_ids=list(ids.values()))
    for file_id in ids.values():
        assert client.vector_stores.files.poll(file_id, vector_store_id=vs.id).status == "completed"
    return vs.id, ids


def test_run_cites_the_right_file(client: openai.OpenAI, upstream: Any) -> None:
    vs_id, ids = _store_with(client, {"report.txt": SHARES.encode(), "menu.txt": b"Lunch: lentil soup and bread."})
    assistant = client.beta.assistants.create(
        model="gpt-4-turbo", instructions="Answer from the files.",
        tools=[{"type": "file_search", "file_search": {"max_num_results": 5,
                                                       "ranking_options": {"ranker": "auto", "score_threshold": 0}}}],
        tool_resources={"file_search": {"vector_store_ids": [vs_id]}})
    upstream.script("shares were outstanding", [
        {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": ["shares outstanding"]})}]},
        {"content": "There were 4,213,000 shares {{marker:0}}."},
    ])
    thread = client.beta.threads.create(messages=[
        {"role": "user", "content": "How many company shares were outstanding last quarter?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, include=[CONTENT])
    assert run.status == "completed", run.last_error
    message = client.beta.threads.messages.list(thread.id, order="desc").data[0]
    text = message.content[0].text
    assert len(text.annotations) == 1
    note = text.annotations[0]
    assert note.type == "file_citation" and note.file_citation.file_id == ids["report.txt"]
    assert text.value[note.start_index:note.end_index] == note.text and note.text.endswith("†report.txt】")
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, include=[CONTENT])
    call = next(s for s in steps.data if s.type == "tool_calls").step_details.tool_calls[0]
    assert call.type == "file_search"
    results = call.file_search.results
    assert results[0].file_id == ids["report.txt"] and results[0].file_name == "report.txt"
    assert 0 < results[0].score <= 1 and "4,213,000" in results[0].content[0].text
    assert call.file_search.ranking_options.ranker == "default_2024_08_21"
    # the model saw the markers and the instruction to cite
    sent = upstream.requests()[-1]["messages"]
    tool_text = next(m["content"] for m in sent if m["role"] == "tool")
    assert "【0:0†report.txt】" in tool_text and "4,213,000" in tool_text
    assert any("cite" in (m.get("content") or "") for m in sent if m["role"] == "system")


def test_streamed_answer_carries_citations(client: openai.OpenAI, upstream: Any) -> None:
    vs_id, ids = _store_with(client, {"myfile2.txt": SHARES.encode()})
    assistant = client.beta.assistants.create(
        name="Financial Analyst Assistant", model="gpt-4-turbo", tools=[{"type": "file_search"}],
        instructions="You are an expert financial analyst.")
    assistant = client.beta.assistants.update(assistant_id=assistant.id,
                                              tool_resources={"file_search": {"vector_store_ids": [vs_id]}})
    upstream.script("outstanding last quarter", [
        {"tool_calls": [{"name": "file_search", "arguments": '{"queries": ["shares outstanding last quarter"]}'}]},
        {"content": "Per the Q3 report, 4,213,000 shares were outstanding {{marker:0}} in total.", "chunk_chars": 3},
    ])
    thread = client.beta.threads.create(messages=[
        {"role": "user", "content": "How many company shares were outstanding last quarter?"}])
    seen: dict[str, Any] = {"deltas": [], "tool_types": []}

    class Handler(openai.AssistantEventHandler):
        @override
        def on_tool_call_created(self, tool_call: Any) -> None:
            seen["tool_types"].append(tool_call.type)

        @override
        def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            seen["deltas"].extend(delta.annotations or [])

        @override
        def on_message_done(self, message: Any) -> None:
            content = message.content[0].text
            seen["cited"] = [client.files.retrieve(a.file_citation.file_id).filename
                             for a in content.annotations if getattr(a, "file_citation", None)]
            for index, annotation in enumerate(content.annotations):
                content.value = content.value.replace(annotation.text, f"[{index}]")
            seen["value"] = content.value

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         instructions="Please address the user as Jane Doe.",
                                         event_handler=Handler()) as stream:
        stream.until_done()
    assert seen["tool_types"] == ["file_search"]
    assert seen["cited"] == ["myfile2.txt"]
    assert seen["value"] == "Per the Q3 report, 4,213,000 shares were outstanding [0] in total."
    assert [d.type for d in seen["deltas"]] == ["file_citation"]
    assert seen["deltas"][0].file_citation.file_id == ids["myfile2.txt"]


def test_thread_attachment_store_is_searched_with_the_assistants(client: openai.OpenAI, upstream: Any) -> None:
    vs_id, _ = _store_with(client, {"handbook.md": b"# Handbook\nHoliday policy: 30 days of paid leave."})
    assistant = client.beta.assistants.create(model="gpt-4-turbo", tools=[{"type": "file_search"}],
                                              tool_resources={"file_search": {"vector_store_ids": [vs_id]}})
    attached = upload(client, "memo.txt", b"Memo: the office closes on Friday for the holiday.")
    thread = client.beta.threads.create(messages=[{
        "role": "user", "content": "When is the office closed, and how much leave do I get?",
        "attachments": [{"file_id": attached, "tools": [{"type": "file_search"}]}]}])
    thread_store = thread.tool_resources.file_search.vector_store_ids[0]
    store = client.vector_stores.retrieve(thread_store)
    assert store.expires_after.anchor == "last_active_at" and store.expires_after.days == 7
    upstream.script("how much leave", [
        {"tool_calls": [{"name": "file_search",
                         "arguments": '{"queries": ["office closed holiday", "paid leave days"]}'}]},
        {"content": "Closed Friday {{marker:0}}; 30 days {{marker:1}}."},
    ])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id)
    results = next(s for s in steps.data if s.type == "tool_calls").step_details.tool_calls[0].file_search.results
    assert {r.file_name for r in results} == {"handbook.md", "memo.txt"}
    message = client.beta.threads.messages.list(thread.id, order="desc").data[0]
    assert {a.file_citation.file_id for a in message.content[0].text.annotations} <= {r.file_id for r in results}
    assert len(message.content[0].text.annotations) == 2
    assert client.vector_stores.retrieve(thread_store).last_active_at >= store.last_active_at


def test_expired_store_fails_the_run(client: openai.OpenAI, http: TestClient, upstream: Any) -> None:
    vs = client.vector_stores.create(name="old", expires_after={"anchor": "last_active_at", "days": 1})
    runtime = http.app.state.runtime  # type: ignore[attr-defined]

    async def age() -> None:
        obj = await runtime.store.get("vector_store", vs.id, None)
        obj["last_active_at"] -= 3 * 86400
        obj["expires_at"] -= 3 * 86400
        await runtime.store.put("vector_store", obj, "default")

    http.portal.call(age)  # type: ignore[union-attr]
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "anything"}],
                                        tool_resources={"file_search": {"vector_store_ids": [vs.id]}})
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "failed" and "expired" in run.last_error.message
    # the documented fix: a new store with the same files, attached with threads.update
    fresh = client.vector_stores.create(name="rag-store")
    client.beta.threads.update(thread.id, tool_resources={"file_search": {"vector_store_ids": [fresh.id]}})
    upstream.script("anything", [{"content": "fine now"}])
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert again.status == "completed"


def test_model_rewrites_and_splits_queries(make_app: Callable[..., TestClient], upstream: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINDLE_RETRIEVAL_TOOL_REWRITE", "true")
    http = make_app()
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http, max_retries=0)
    vs_id, ids = _store_with(client, {"isle.txt": b"The lighthouse on Skerry Isle shines a green lamp."})
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "file_search"}],
                                              tool_resources={"file_search": {"vector_store_ids": [vs_id]}})
    upstream.script("what colour", [
        {"tool_calls": [{"name": "file_search", "arguments": '{"queries": ["it colour?"]}'}]},
        {"content": "Green {{marker:0}}."},
    ])
    upstream.script("You turn questions into search queries", [{"content": '["Skerry Isle lighthouse lamp colour"]'}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "what colour is the lamp?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    rewrite = [r for r in upstream.requests() if "You turn questions" in json.dumps(r["messages"])]
    assert rewrite and rewrite[0]["model"] == "gpt-4o"
    tool_text = next(m["content"] for m in upstream.requests()[-1]["messages"] if m["role"] == "tool")
    assert "Skerry Isle lighthouse lamp colour" in tool_text and "green lamp" in tool_text
    message = client.beta.threads.messages.list(thread.id, order="desc").data[0]
    assert message.content[0].text.annotations[0].file_citation.file_id == ids["isle.txt"]


def test_marker_helpers() -> None:
    mapping = {"2:0": "file-a", "2:1": "file-b"}
    text = "See 【2:1†b.pdf】 and 【2:0†a.txt】, not 【9:9†x】 or 【bad】."
    found = citations.find_citations(text, mapping)
    assert [a["file_citation"]["file_id"] for a in found] == ["file-b", "file-a"]
    assert text[found[0]["start_index"]:found[0]["end_index"]] == "【2:1†b.pdf】"
    assert citations.pending("Answer 【2:") == len("Answer ")
    assert citations.pending("Answer 【2:1†a】 done") is None
    assert citations.pending("no marker") is None
    assert citations.marker(3, 4, "we【ird】.txt") == "【3:4†weird.txt】"


def test_step_content_only_when_included(client: openai.OpenAI, upstream: Any) -> None:
    vs_id, _ = _store_with(client, {"fact.txt": b"The tallest tree in the park is a sequoia."})
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}],
                                              tool_resources={"file_search": {"vector_store_ids": [vs_id]}})
    upstream.script("tallest tree", [{"tool_calls": [{"name": "file_search", "arguments": '{"queries": ["tallest tree"]}'}]},
                                     {"content": "A sequoia {{marker:0}}."}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Which is the tallest tree?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"

    def first_result(**kw: Any) -> Any:
        steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc", **kw)
        return steps.data[0].step_details.tool_calls[0].file_search.results[0]

    assert first_result().content is None
    assert "sequoia" in first_result(include=[CONTENT]).content[0].text
