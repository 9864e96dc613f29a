"""The model's output is untrusted input too: text that is not valid Unicode is mended
before it is stored (a pair split across stream chunks is joined, a lone surrogate becomes
U+FFFD), so neither the run, its retrieval, a list nor the thread's next run can break."""

from __future__ import annotations

import openai
from fastapi.testclient import TestClient

from tests.unit.conftest import _fresh_script, client, http, make_app, upstream  # noqa: F401
from tests.upstream.server import UpstreamHandle


def test_invalid_unicode_from_the_model_is_mended(http: TestClient, client: openai.OpenAI,
                                                  upstream: UpstreamHandle) -> None:
    # One character per chunk: the surrogate pair of the emoji arrives in two chunks.
    upstream.script("odd text", [{"content": "ok \ud83d\ude00 bad \ud800 end", "chunk_chars": 1}])
    upstream.script("second turn", [{"content": "still fine"}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "odd text"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "completed", run.last_error
    assert http.get(f"/v1/threads/{thread.id}/runs/{run.id}", headers={"OpenAI-Beta": "assistants=v2"}).status_code == 200
    [answer] = [m for m in client.beta.threads.messages.list(thread_id=thread.id).data if m.role == "assistant"]
    assert answer.content[0].text.value == "ok \U0001f600 bad \ufffd end"  # type: ignore[union-attr]
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="second turn")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                     poll_interval_ms=20)
    assert again.status == "completed", again.last_error
    sent = upstream.requests()[-1]["messages"]
    assert any(m.get("content") == "ok \U0001f600 bad \ufffd end" for m in sent)
