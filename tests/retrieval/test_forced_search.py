"""tool_choice forcing file_search on a model that ignores tool_choice (many local backends
do): the server runs the search itself with the user's last message, then the model answers
from the results, with citations."""

from __future__ import annotations

from typing import Any

import openai

from tests.retrieval.test_tool import CONTENT, SHARES, _store_with


def test_forced_file_search_is_run_by_the_server_when_the_model_ignores_it(client: openai.OpenAI,
                                                                            upstream: Any) -> None:
    vs_id, ids = _store_with(client, {"report.txt": SHARES.encode(), "menu.txt": b"Lunch: lentil soup and bread."})
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "file_search"}],
                                              tool_resources={"file_search": {"vector_store_ids": [vs_id]}})
    upstream.script("shares outstanding last quarter", [
        {"content": "I know this without searching: about a million."},  # ignores tool_choice
        {"content": "There were 4,213,000 shares {{marker:0}}."},
    ])
    question = "How many shares outstanding last quarter?"
    thread = client.beta.threads.create(messages=[{"role": "user", "content": question}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, include=[CONTENT],
                                                   tool_choice={"type": "file_search"}, poll_interval_ms=20)
    assert run.status == "completed", run.last_error
    first, second = upstream.requests()[-2:]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "file_search"}}
    tool_text = next(m["content"] for m in second["messages"] if m["role"] == "tool")
    assert "4,213,000" in tool_text and "【0:0†report.txt】" in tool_text
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc", include=[CONTENT]).data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    call = steps[0].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert call.type == "file_search" and call.file_search.results[0].file_id == ids["report.txt"]
    [message] = [m for m in client.beta.threads.messages.list(thread.id).data if m.role == "assistant"]
    text = message.content[0].text  # type: ignore[union-attr]
    assert "million" not in text.value  # the ignored turn's text is never shown
    assert text.annotations[0].file_citation.file_id == ids["report.txt"]  # type: ignore[union-attr]
