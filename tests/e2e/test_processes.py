"""Two Spindle processes on one PostgreSQL database (real servers, real kill -9): a run whose
process dies is settled by the other within its lease, with the text already streamed kept;
a cancel sent to the other process reaches the run where it executes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

sys.path.insert(0, str(harness.REPO_ROOT))
from tests.pgserver import PostgresServer, PostgresUnavailable  # noqa: E402

pytestmark = pytest.mark.min_sdk(2)  # one SDK is enough: this is about the server processes
LEASE_S = 2.0


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is needed here: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pair(database: PostgresServer, upstream: harness.Upstream, tmp_path: Path) -> Iterator[list[harness.SpindleServer]]:
    url = database.create_database("p_" + tmp_path.name[-12:].replace("-", "_").lower())
    env = {"SPINDLE_DATABASE_URL": url, "SPINDLE_RUN_LEASE_S": str(LEASE_S), "SPINDLE_SANDBOX_ENABLED": "false",
           "SPINDLE_DRAIN_TIMEOUT_S": "8"}
    servers = [harness.start_server(upstream, tmp_path / name, env, log_path=tmp_path / f"{name}.log", processes=1)
               for name in ("a", "b")]
    yield servers
    for server in servers:
        server.stop()



def _streaming_run(client: Any, upstream: harness.Upstream, word: str) -> tuple[Any, Any]:
    upstream.script(word, [{"content": "partial words keep coming", "chunk_chars": 2, "delay_ms": 30, "hang": True}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": word}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    def texts() -> Any:
        data = client.beta.threads.messages.list(thread_id=thread.id).data
        return data[0].role == "assistant" and data[0].content and data[0].content[0].text.value
    harness.wait_until(texts, 20, "streamed text")
    return thread, run


def test_a_run_of_a_killed_process_is_settled_by_the_other(pair: list[harness.SpindleServer],
                                                           upstream: harness.Upstream) -> None:
    a, b = pair
    client_a, client_b = harness.make_client("openai", a.base_url), harness.make_client("openai", b.base_url)
    thread, run = _streaming_run(client_a, upstream, "die mid answer")
    assert client_b.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"
    time.sleep(LEASE_S * 1.5)  # b must leave a live process's run alone, past the lease
    assert client_b.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"
    a.kill9()
    killed = time.monotonic()
    failed = harness.wait_until(lambda: (r := client_b.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "failed"
                   and r, LEASE_S * 4 + 5, "the orphaned run to fail")
    took = time.monotonic() - killed
    assert took <= LEASE_S * (1 + 1 / 3) + 3.0, took
    assert failed.last_error.code == "server_error" and "stopped" in failed.last_error.message
    message = client_b.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.status == "incomplete" and message.content[0].text.value.startswith("partial")
    # the thread takes a new run at once, on the survivor
    upstream.script("after the death", [{"content": "alive"}])
    client_b.beta.threads.messages.create(thread_id=thread.id, role="user", content="after the death")
    again = client_b.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=run.assistant_id,
                                                       poll_interval_ms=50)
    assert again.status == "completed"
    client_a.close()
    client_b.close()


def test_a_cancel_sent_to_the_other_process_reaches_the_run(pair: list[harness.SpindleServer],
                                                           upstream: harness.Upstream) -> None:
    a, b = pair
    client_a, client_b = harness.make_client("openai", a.base_url), harness.make_client("openai", b.base_url)
    thread, run = _streaming_run(client_a, upstream, "cancel me elsewhere")
    assert client_b.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
    done = harness.wait_until(lambda: (r := client_a.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "cancelled"
                 and r, LEASE_S * 3 + 5, "the cancel to land")
    assert done.cancelled_at is not None
    steps = client_b.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert steps and all(s.status == "cancelled" for s in steps)
    client_a.close()
    client_b.close()


def test_sigterm_lets_a_running_run_finish(pair: list[harness.SpindleServer], upstream: harness.Upstream) -> None:
    """A rolling restart: the process told to stop finishes what it executes (and claims
    nothing new) before it exits; no run fails."""
    a, b = pair
    client_a, client_b = harness.make_client("openai", a.base_url), harness.make_client("openai", b.base_url)
    upstream.script("finish before you go", [{"content": "every word of this answer arrives", "chunk_chars": 3,
                                              "delay_ms": 250}])
    assistant = client_a.beta.assistants.create(model="m")
    thread = client_a.beta.threads.create(messages=[{"role": "user", "content": "finish before you go"}])
    run = client_a.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    harness.wait_until(lambda: client_b.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress", 10,
          "the run to start")
    client_a.close()
    a.stop()  # SIGTERM, and wait for the exit
    done = client_b.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert done.status == "completed", done.last_error
    answer = client_b.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert answer.content[0].text.value == "every word of this answer arrives"
    client_b.close()
