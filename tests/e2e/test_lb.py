"""Three Spindle processes on one PostgreSQL + S3 behind nginx (real processes, real kill -9),
driven by the official SDK through the balancer only: requests spread over the processes, a
thread's Code Interpreter session follows the thread (affinity), and killing the process that
runs code and holds sessions loses nothing — the run sleeping in its sandbox fails cleanly
within the lease, a run waiting in ``requires_action`` takes its tool outputs through another
process, and the thread gets a fresh session that says so, with its files copied in again."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest

# One SDK is enough (this is about the server processes); starting three servers on a loaded
# machine takes longer than the tier's default timeout.
pytestmark = [
    pytest.mark.min_sdk(2),
    pytest.mark.timeout(600),
    # Under a topology the whole tier already runs behind the balancer; this module builds its own.
    pytest.mark.skipif(harness.topology_processes() > 1, reason="runs in the single-process passes"),
    # It brings its own PostgreSQL + S3: once per test.sh is enough (the SQLite pass).
    pytest.mark.skipif(bool(os.environ.get("SPINDLE_TEST_BACKENDS")), reason="runs in the SQLite pass"),
]
LEASE_S = 3.0


@pytest.fixture(scope="module")
def cluster(upstream: harness.Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.SpindleServer]:
    root = tmp_path_factory.mktemp("lb")
    env = harness.backend_env("postgres+s3") | {"SPINDLE_RUN_LEASE_S": str(LEASE_S), "SPINDLE_DRAIN_TIMEOUT_S": "5",
                                                "SPINDLE_SANDBOX_POOL_SIZE": "1",
                                                # ingestion slowed down, so a batch is mid-way at the kill
                                                "SPINDLE_RETRIEVAL_INGEST_CONCURRENCY": "2",
                                                "SPINDLE_RETRIEVAL_INGEST_LEASE_S": str(LEASE_S)}
    server = harness.SpindleServer(root / "data", upstream=upstream, env=env, log_path=root / "spindle.log",
                                   processes=3)
    try:
        server.start(timeout=300)
    except harness.StartError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def client(cluster: harness.SpindleServer) -> Iterator[Any]:
    if not cluster.alive:
        cluster.start(timeout=300)
    with harness.make_client("openai", cluster.base_url) as c:
        yield c


def _metric(url: str, name: str, **labels: str) -> float:
    """One sample of a process's /metrics (0 when absent)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total



def code_call(code: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "python", "arguments": json.dumps({"code": code})}]}


BATCH_FILES = 60
_WORDS = ("harbour lantern granite ledger orchard quarry tide signal copper meadow beacon archive "
          "ferry mill compass glacier summit delta canyon prairie").split()


def _document(i: int) -> bytes:
    body = " ".join(_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(900))
    return f"Document {i} carries the marker zq{i:04d}x. {body}".encode()


def ci_outputs(client: Any, thread_id: str, run_id: str) -> list[str]:
    steps = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run_id, order="asc").data
    return [o.logs for s in steps if s.type == "tool_calls" for c in s.step_details.tool_calls
            if c.type == "code_interpreter" for o in c.code_interpreter.outputs if o.type == "logs"]


def test_requests_spread_over_every_process(cluster: harness.SpindleServer, client: Any) -> None:
    before = [_metric(cluster.process_url(i), "spindle_http_requests_total", route="/v1/assistants")
              for i in range(3)]
    for _ in range(9):
        client.beta.assistants.create(model="m")
    after = [_metric(cluster.process_url(i), "spindle_http_requests_total", route="/v1/assistants")
             for i in range(3)]
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 9 and all(n >= 2 for n in served), served  # round robin, roughly even


def test_a_threads_session_follows_it_across_processes(client: Any, upstream: harness.Upstream) -> None:
    """Five runs on one thread, each request free to land anywhere: the variable set by the
    first is there for every later one (the session's holder executes them)."""
    upstream.script("set the counter", [code_call("counter = 41\nprint('set', counter)"), {"content": "set"}])
    upstream.script("bump the counter", [code_call("counter += 1\nprint('now', counter)"), {"content": "bumped"}])
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "set the counter"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=50)
    assert run.status == "completed", run.last_error
    for n in range(4):
        upstream.script("bump the counter", [code_call("counter += 1\nprint('now', counter)"), {"content": "bumped"}])
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content=f"bump the counter ({n})")
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                       poll_interval_ms=50)
        assert run.status == "completed", run.last_error
        (logs,) = ci_outputs(client, thread.id, run.id)
        assert f"now {42 + n}" in logs, logs
        assert "expired" not in logs


def _executing_process(cluster: harness.SpindleServer) -> int:
    counts = [_metric(cluster.process_url(i), "spindle_runs_here", state="executing") for i in range(3)]
    busy = [i for i, n in enumerate(counts) if n > 0]
    assert len(busy) == 1, counts
    return busy[0]


def test_kill9_of_the_process_running_code_loses_nothing(cluster: harness.SpindleServer, client: Any,
                                                         upstream: harness.Upstream, tmp_path: Path) -> None:
    data = tmp_path / "numbers.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    with data.open("rb") as handle:
        file = client.files.create(file=handle, purpose="assistants")
    ci = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}],
                                       tool_resources={"code_interpreter": {"file_ids": [file.id]}})
    fn = client.beta.assistants.create(model="m", tools=[{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}])
    # A run waiting for tool outputs (no process holds it while it waits).
    upstream.script("look it up for me", [{"tool_calls": [{"name": "lookup", "arguments": '{"q": "x"}'}]},
                                          {"content": "the answer is 7"}])
    waiting_thread = client.beta.threads.create(messages=[{"role": "user", "content": "look it up for me"}])
    waiting = client.beta.threads.runs.create_and_poll(thread_id=waiting_thread.id, assistant_id=fn.id,
                                                       poll_interval_ms=50)
    assert waiting.status == "requires_action"
    # A run sleeping in the sandbox, on a thread whose session already holds state.
    upstream.script("remember and sleep", [code_call("secret = 99\nprint(open('/mnt/data/numbers.csv').read())"),
                                           {"content": "remembered"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "remember and sleep"}])
    first = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=ci.id, poll_interval_ms=50)
    assert first.status == "completed", first.last_error
    upstream.script("now sleep a while", [code_call("import time\nprint('sleeping', flush=True)\ntime.sleep(120)"),
                                          {"content": "never"}])
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="now sleep a while")
    sleeping = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=ci.id)
    harness.wait_until(lambda: any(s.type == "tool_calls" and s.status == "in_progress" for s in
                      client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=sleeping.id).data),
          30, "the code to start")
    time.sleep(2)  # the kernel is in time.sleep now (the step's logs are stored when the call ends)
    # A 60-file batch ingesting on every process (each claims files from the store).
    vs = client.vector_stores.create(name="batch at the kill")
    file_ids = [client.files.create(file=(f"doc{i}.txt", _document(i)), purpose="assistants").id
                for i in range(BATCH_FILES)]
    batch = client.vector_stores.file_batches.create(vector_store_id=vs.id, file_ids=file_ids)
    at_kill = harness.wait_until(lambda: (b := client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=vs.id))
                    .file_counts.completed >= 2 and b, 120, "the batch to be part-way")
    victim = _executing_process(cluster)
    cluster.kill9_one(victim)
    killed = time.monotonic()

    # The sleeping run: failed by a survivor within the lease, as a restart does.
    failed = harness.wait_until(lambda: (r := client.beta.threads.runs.retrieve(sleeping.id, thread_id=thread.id)).status
                   == "failed" and r, LEASE_S * 4 + 10, "the orphaned run to fail")
    assert time.monotonic() - killed <= LEASE_S * 2 + 5
    assert failed.last_error.code == "server_error"
    # The waiting run: its tool outputs go through whichever survivor nginx picks.
    resumed = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=waiting.id, thread_id=waiting_thread.id, poll_interval_ms=50,
        tool_outputs=[{"tool_call_id": waiting.required_action.submit_tool_outputs.tool_calls[0].id, "output": "7"}])
    assert resumed.status == "completed", resumed.last_error
    answer = client.beta.threads.messages.list(thread_id=waiting_thread.id).data[0]
    assert answer.content[0].text.value == "the answer is 7"
    # The thread goes on with a fresh session, told its state is gone, its file copied in again.
    upstream.script("after the crash", [code_call("print('secret' in globals(), open('/mnt/data/numbers.csv').read())"),
                                        {"content": "fresh"}])
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="after the crash")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=ci.id, poll_interval_ms=50)
    assert again.status == "completed", again.last_error
    (logs,) = ci_outputs(client, thread.id, again.id)
    assert "False a,b" in logs, logs
    # the note, in the tool output the model reads (and in its instructions), once
    last = upstream.requests()[-1]["messages"]
    (output,) = [m["content"] for m in last if m["role"] == "tool" and "False a,b" in (m.get("content") or "")]
    assert "session of this thread expired" in output, output
    assert "session of this thread expired" in last[0]["content"]
    # The batch completes on the survivors, every file once, the counters adding up.
    assert at_kill.file_counts.completed < BATCH_FILES, "the batch was not mid-way at the kill"
    done = harness.wait_until(lambda: (b := client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=vs.id))
                 .status == "completed" and b, 240, "the survivors to complete the batch")
    counts = done.file_counts
    assert (counts.completed, counts.in_progress, counts.failed, counts.total) == (BATCH_FILES, 0, 0, BATCH_FILES)
    store = client.vector_stores.retrieve(vs.id)
    assert (store.file_counts.completed, store.file_counts.in_progress) == (BATCH_FILES, 0), store.file_counts
    listed = list(client.vector_stores.files.list(vector_store_id=vs.id, limit=100))
    assert sorted(f.id for f in listed) == sorted(file_ids)
    assert store.usage_bytes == sum(f.usage_bytes for f in listed) > 0
    # ... and is searchable from any process (the index is in PostgreSQL).
    hits = client.vector_stores.search(vector_store_id=vs.id, query="zq0042x")
    assert hits.data and hits.data[0].file_id == file_ids[42], [h.filename for h in hits.data]
    # nothing stuck: no run of these threads is still active
    for t, r in ((thread.id, sleeping.id), (waiting_thread.id, waiting.id)):
        assert client.beta.threads.runs.retrieve(r, thread_id=t).status in ("failed", "completed")
    cluster.start(timeout=300)  # back to three for the next test
