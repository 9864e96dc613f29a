"""Racing requests against the store's invariants, through the real app and the SDK.

The event log is read through a second store object on the app's database: it is what every
stream replays, so "exactly one step.completed" is checked where it matters.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from fastapi.testclient import TestClient

from tests.inprocess import read_run_events
from tests.unit.conftest import _fresh_script, client, http, make_app, upstream  # noqa: F401
from tests.unit.test_runs import WEATHER, wait_status
from tests.upstream.server import UpstreamHandle


def events_of(http: TestClient, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = asyncio.run(read_run_events(http, run_id))
    return [(name, json.loads(data) if data.startswith("{") else {}) for name, data in rows]


def race(n: int, action: Callable[[int], Any]) -> list[Any]:
    """Run ``action(i)`` on n threads released at once; returns their results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = action(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _waiting_run(client: openai.OpenAI, upstream: UpstreamHandle, word: str) -> tuple[Any, Any]:
    upstream.script(word, [{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}]},
                           {"content": "answer: {{last_tool}}"}])
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": word}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "requires_action"
    return thread, run


def test_racing_submit_tool_outputs_exactly_one_wins(http: TestClient, client: openai.OpenAI,
                                                      upstream: UpstreamHandle, tmp_path: Path) -> None:
    thread, run = _waiting_run(client, upstream, "race submit")
    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
    url = f"/v1/threads/{thread.id}/runs/{run.id}/submit_tool_outputs"

    def submit(i: int) -> int:
        body = {"tool_outputs": [{"tool_call_id": call_id, "output": f"output-{i}"}]}
        return http.post(url, json=body, headers={"OpenAI-Beta": "assistants=v2"}).status_code

    statuses = race(20, submit)
    assert sorted(statuses) == [200] + [400] * 19, statuses
    done = wait_status(client, thread.id, run.id, {"completed", "failed"})
    assert done.status == "completed"
    completed = [data for name, data in events_of(http, run.id)
                 if name == "thread.run.step.completed" and data["step_details"]["type"] == "tool_calls"]
    assert len(completed) == 1
    winner = completed[0]["step_details"]["tool_calls"][0]["function"]["output"]
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert steps[0].step_details.tool_calls[0].function.output == winner  # type: ignore[union-attr]
    answer = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert answer.content[0].text.value == f"answer: {winner}"  # type: ignore[union-attr]


def test_metadata_updates_during_a_run_survive_it(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("slow writer", [{"content": "a b c d e f g h i j", "chunk_chars": 2, "delay_ms": 60}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "slow writer"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    wait_status(client, thread.id, run.id, {"in_progress"})
    deadline = time.monotonic() + 10
    while not (messages := [m for m in client.beta.threads.messages.list(thread_id=thread.id).data
                            if m.role == "assistant"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"tag": "kept"})
    client.beta.threads.messages.update(messages[0].id, thread_id=thread.id, metadata={"note": "kept too"})
    done = wait_status(client, thread.id, run.id, {"completed", "failed"})
    assert done.status == "completed"
    assert done.metadata == {"tag": "kept"}
    final = client.beta.threads.messages.retrieve(messages[0].id, thread_id=thread.id)
    assert final.metadata == {"note": "kept too"}
    assert final.content[0].text.value == "a b c d e f g h i j"  # type: ignore[union-attr]


def test_racing_run_creation_one_active_run(http: TestClient, client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script("hold the thread", [{"content": "x", "hang": True}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hold the thread"}])
    responses = race(12, lambda _i: http.post(f"/v1/threads/{thread.id}/runs", json={"assistant_id": assistant.id},
                                              headers={"OpenAI-Beta": "assistants=v2"}))
    assert sorted(r.status_code for r in responses) == [200] + [400] * 11
    assert all("already has an active run" in r.json()["error"]["message"] for r in responses if r.status_code == 400)
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id).data] == [winner["id"]]
    client.beta.threads.runs.cancel(winner["id"], thread_id=thread.id)
    wait_status(client, thread.id, winner["id"], {"cancelled"})
    # Once it is over the thread takes a new run.
    upstream.script("second go", [{"content": "fine"}])
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="second go")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                     poll_interval_ms=20)
    assert again.status == "completed"


def test_cancel_racing_tool_outputs_ends_once(http: TestClient, client: openai.OpenAI, upstream: UpstreamHandle,
                                              tmp_path: Path) -> None:
    thread, run = _waiting_run(client, upstream, "cancel or submit")
    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
    base = f"/v1/threads/{thread.id}/runs/{run.id}"
    headers = {"OpenAI-Beta": "assistants=v2"}

    def act(i: int) -> int:
        if i % 2:
            return http.post(f"{base}/cancel", headers=headers).status_code
        body = {"tool_outputs": [{"tool_call_id": call_id, "output": "late"}]}
        return http.post(f"{base}/submit_tool_outputs", json=body, headers=headers).status_code

    statuses = race(10, act)
    assert statuses.count(200) == 1, statuses
    final = wait_status(client, thread.id, run.id, {"completed", "cancelled", "failed", "expired"})
    terminal = [name for name, _ in events_of(http, run.id)
                if name in ("thread.run.completed", "thread.run.cancelled", "thread.run.failed")]
    assert terminal == [f"thread.run.{final.status}"]


def test_racing_cancels_one_wins(http: TestClient, client: openai.OpenAI, upstream: UpstreamHandle,
                                 tmp_path: Path) -> None:
    thread, run = _waiting_run(client, upstream, "cancel many")
    statuses = race(10, lambda _i: http.post(f"/v1/threads/{thread.id}/runs/{run.id}/cancel",
                                             headers={"OpenAI-Beta": "assistants=v2"}).status_code)
    assert sorted(statuses) == [200] + [400] * 9
    wait_status(client, thread.id, run.id, {"cancelled"})
    names = [name for name, _ in events_of(http, run.id)]
    assert names.count("thread.run.cancelling") == 1 and names.count("thread.run.cancelled") == 1
