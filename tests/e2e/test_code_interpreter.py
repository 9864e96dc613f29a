"""Code Interpreter through the real server and SDK: the seed's snippets, state across runs,
errors and retries, files in and out, parallel threads."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import harness
import httpx
import openai
import pytest

PLOT = ("import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [3, 11, 14])\n"
        "plt.title('3x + 11')\n"
        "plt.show()\n"
        "print(open('/mnt/data/speech.py').read().strip())\n")


def code_call(code: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "python", "arguments": json.dumps({"code": code})}], "chunk_chars": 7}


def steps_of(client: Any, thread_id: str, run_id: str) -> list[Any]:
    return client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run_id, order="asc").data


def ci_calls(client: Any, thread_id: str, run_id: str) -> list[Any]:
    return [c for s in steps_of(client, thread_id, run_id) if s.type == "tool_calls"
            for c in s.step_details.tool_calls if c.type == "code_interpreter"]


@pytest.mark.min_sdk(1, 21)
def test_seed_snippet_with_tool_resources(openai_client: Any, upstream: harness.Upstream, tmp_path: Any) -> None:
    upstream.script("solve the equation `3x + 11 = 14`", [code_call(PLOT), {"content": "x = 1. The chart is above."}])
    speech = tmp_path / "speech.py"
    speech.write_text("print('four score and seven years ago')\n")
    with open(speech, "rb") as handle:
        file = openai_client.files.create(file=handle, purpose="assistants")
    assistant = openai_client.beta.assistants.create(
        instructions="You are an AI assistant that can write code to help answer math questions.",
        model="gpt-4-1106-preview", tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [file.id]}})
    thread = openai_client.beta.threads.create(messages=[
        {"role": "user", "content": "I need to solve the equation `3x + 11 = 14`. Can you help me?"}])
    run = openai_client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    message = openai_client.beta.threads.messages.list(thread_id=thread.id).data[0]
    kinds = [c.type for c in message.content]
    assert kinds == ["image_file", "text"], kinds
    image_data = openai_client.files.content(message.content[0].image_file.file_id)
    image_data_bytes = image_data.read()
    out = tmp_path / "my-image.png"
    with open(out, "wb") as handle:
        handle.write(image_data_bytes)
    assert image_data_bytes[:8] == b"\x89PNG\r\n\x1a\n" and len(image_data_bytes) > 1000
    assert openai_client.files.retrieve(message.content[0].image_file.file_id).purpose == "assistants_output"
    (call,) = ci_calls(openai_client, thread.id, run.id)
    assert call.code_interpreter.input == PLOT
    outputs = {o.type: o for o in call.code_interpreter.outputs}
    assert "four score" in outputs["logs"].logs
    assert outputs["image"].image.file_id == message.content[0].image_file.file_id
    sent = upstream.requests()
    assert any("/mnt/data/speech.py" in (m.get("content") or "") for m in sent[0]["messages"] if m["role"] == "system")
    assert "four score" in sent[-1]["messages"][-1]["content"]  # the tool output went back to the model


@pytest.mark.max_sdk(1, 20)
def test_seed_snippet_with_v1_file_ids(client_kind: str, spindle_server: harness.SpindleServer,
                                       upstream: harness.Upstream, tmp_path: Any) -> None:
    client = harness.make_client(client_kind, spindle_server.base_url, api_version="2024-05-01-preview")
    upstream.script("v1 equation 3x + 11 = 14", [code_call(PLOT), {"content": "Done."}])
    speech = tmp_path / "speech.py"
    speech.write_text("print('v1 speech')\n")
    with open(speech, "rb") as handle:
        file = client.files.create(file=handle, purpose="assistants")
    assistant = client.beta.assistants.create(
        instructions="You are an AI assistant that can write code to help answer math questions.",
        model="gpt-4-1106-preview", tools=[{"type": "code_interpreter"}], file_ids=[file.id])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "v1 equation 3x + 11 = 14",
                                                   "file_ids": [file.id]}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    image = next(c for c in message.content if c.type == "image_file")
    assert client.files.content(image.image_file.file_id).read()[:4] == b"\x89PNG"
    client.close()


@pytest.mark.min_sdk(1, 21)
def test_state_persists_across_runs_and_errors_are_retried(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("remember a number", [code_call("secret = 41\nimport math"), {"content": "Stored."}])
    upstream.script("use the number", [code_call("print(secret + undefined_name)"),
                                       code_call("print(secret + 1, math.floor(2.5))"), {"content": "It is 42."}])
    assistant = openai_client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "remember a number"}])
    run = openai_client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    openai_client.beta.threads.messages.create(thread_id=thread.id, role="user", content="use the number")
    run = openai_client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    failing, working = ci_calls(openai_client, thread.id, run.id)
    assert "NameError" in failing.code_interpreter.outputs[0].logs
    assert "\x1b[" not in failing.code_interpreter.outputs[0].logs  # ANSI colours stripped
    assert working.code_interpreter.outputs[0].logs.strip() == "42 2"
    assert openai_client.beta.threads.messages.list(thread_id=thread.id).data[0].content[0].text.value == "It is 42."


@pytest.mark.min_sdk(1, 21)
def test_csv_attachment_analysed_and_file_link_annotated(openai_client: Any, upstream: harness.Upstream) -> None:
    code = ("import pandas as pd\n"
            "df = pd.read_csv('/mnt/data/sales.csv')\n"
            "print(int(df['amount'].sum()))\n"
            "df.describe().to_csv('/mnt/data/summary.csv')\n")
    upstream.script("analyse my sales", [code_call(code),
                                         {"content": "Total is 42. [Download](sandbox:/mnt/data/summary.csv)"}])
    csv = openai_client.files.create(file=("sales.csv", b"region,amount\nnorth,10\nsouth,32\n"), purpose="assistants")
    assistant = openai_client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = openai_client.beta.threads.create(messages=[{
        "role": "user", "content": "analyse my sales",
        "attachments": [{"file_id": csv.id, "tools": [{"type": "code_interpreter"}]}]}])
    run = openai_client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    (call,) = ci_calls(openai_client, thread.id, run.id)
    assert call.code_interpreter.outputs[0].logs.strip().startswith("42")
    text = openai_client.beta.threads.messages.list(thread_id=thread.id).data[0].content[0].text
    (annotation,) = text.annotations
    assert annotation.type == "file_path" and annotation.text == "sandbox:/mnt/data/summary.csv"
    assert text.value[annotation.start_index:annotation.end_index] == annotation.text
    summary = openai_client.files.content(annotation.file_path.file_id).read()
    assert b"amount" in summary and b"mean" in summary


@pytest.mark.min_sdk(1, 21)
def test_streamed_code_and_outputs(openai_client: Any, upstream: harness.Upstream) -> None:
    upstream.script("stream some code", [code_call("for i in range(3):\n    print('line', i)"),
                                         {"content": "Printed three lines."}])
    assistant = openai_client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "stream some code"}])
    inputs: list[str] = []
    logs: list[str] = []
    created: list[str] = []

    class Handler(openai.AssistantEventHandler):
        def on_tool_call_created(self, tool_call: Any) -> None:
            created.append(tool_call.type)

        def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
            if delta.type == "code_interpreter" and delta.code_interpreter:
                if delta.code_interpreter.input:
                    inputs.append(delta.code_interpreter.input)
                for output in delta.code_interpreter.outputs or []:
                    if output.type == "logs":
                        logs.append(output.logs)

    with openai_client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                                event_handler=Handler()) as stream:
        stream.until_done()
    assert created == ["code_interpreter"]
    assert len(inputs) > 1 and "".join(inputs) == "for i in range(3):\n    print('line', i)"
    assert "line 2" in "".join(logs)
    assert stream.get_final_run().status == "completed"


@pytest.mark.min_sdk(1, 21)
def test_two_threads_run_in_parallel(openai_client: Any, upstream: harness.Upstream,
                                     spindle_server: harness.SpindleServer) -> None:
    # Each execution prints when it started and ended (wall clock, shared by the sandboxes):
    # the two intervals must overlap, whatever a session's start-up cost.
    code = code_call("import time\nt0 = time.time()\ntime.sleep(1.5)\nprint(t0, time.time())")
    for i in range(2):  # one rule per thread: a rule's replies are consumed in order
        upstream.script(f"parallel sleeper {i}", [code, {"content": "ok"}])
    assistant = openai_client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    threads = [openai_client.beta.threads.create(messages=[{"role": "user", "content": f"parallel sleeper {i}"}])
               for i in range(2)]
    # Two ready sessions first: this is about running in parallel, not about how fast the pool
    # refills after earlier tests (that is the burst benchmark's subject).
    # Behind a balancer (SPINDLE_TEST_TOPOLOGY) either run may land on any process: all of them.
    deadline = time.monotonic() + 90
    for url in [spindle_server.process_url(i) for i in range(len(spindle_server.process_ports))]:
        with httpx.Client(base_url=url, timeout=10) as http:
            while (sessions := http.get("/healthz").json()["sandbox_sessions"])["pooled"] < 2:
                assert time.monotonic() < deadline, f"the session pool did not fill: {sessions}"
                time.sleep(0.2)
    runs: dict[str, Any] = {}

    def go(thread_id: str) -> None:
        runs[thread_id] = openai_client.beta.threads.runs.create_and_poll(thread_id=thread_id,
                                                                          assistant_id=assistant.id)

    workers = [threading.Thread(target=go, args=(t.id,)) for t in threads]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(90)
    assert {r.status for r in runs.values()} == {"completed"}
    spans = []
    for thread_id, run in runs.items():
        (call,) = ci_calls(openai_client, thread_id, run.id)
        start, end = map(float, call.code_interpreter.outputs[0].logs.split())
        spans.append((start, end))
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the sessions ran one after the other: {spans}"


@pytest.mark.min_sdk(1, 21)
def test_hostile_code_through_the_server(start_server: Any, upstream: harness.Upstream) -> None:
    """The model's code attacks the host through a real run; every attack fails inside the
    sandbox, the model gets a readable error, and the server and other threads carry on.
    (Sentinels are built at run time so a traceback quoting the source cannot match them.)"""
    server = start_server(env={"SPINDLE_SANDBOX_CALL_TIMEOUT_S": "3", "SPINDLE_SANDBOX_MEMORY_MB": "512",
                               "SPINDLE_SANDBOX_POOL_SIZE": "1", "SPINDLE_API_KEYS": "k-secret-123"})
    client = harness.make_client("openai", server.base_url, api_key="k-secret-123")
    port = server.port
    attacks = {
        "attack network": f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\nprint('CONN' + 'ECTED')",
        "attack files": f"print(open({str(server.data_dir / 'spindle.db')!r}, 'rb').read(16))",
        "attack secrets": "import os\nprint({k: v for k, v in os.environ.items() if 'SPINDLE' in k or 'k-secret' in v})\n"
                          "print(open('/proc/1/environ', 'rb').read())",
        "attack memory": "x = bytearray(4 * 1024**3)\nprint('ALLOC' + 'ATED')",
        "attack forks": "import os\nfor _ in range(100000):\n    os.fork()",
        "attack loop": "while True:\n    pass",
    }
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    for prompt, code in attacks.items():
        upstream.script(prompt, [code_call(code), {"content": "Tried: {{last_tool}}"}])
        thread = client.beta.threads.create(messages=[{"role": "user", "content": prompt}])
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed", (prompt, run.last_error)
        (call,) = ci_calls(client, thread.id, run.id)
        logs = " ".join(o.logs for o in call.code_interpreter.outputs if o.type == "logs")
        assert "CONNECTED" not in logs and "ALLOCATED" not in logs and "SQLite format" not in logs, (prompt, logs)
        assert "k-secret-123" not in logs, (prompt, logs)
        assert logs.strip(), f"{prompt}: the model got no error to read"
        # After each attack the server still answers and a fresh thread still computes.
        upstream.script(f"sanity after {prompt}", [code_call("print(6 * 7)"), {"content": "{{last_tool}}"}])
        other = client.beta.threads.create(messages=[{"role": "user", "content": f"sanity after {prompt}"}])
        check = client.beta.threads.runs.create_and_poll(thread_id=other.id, assistant_id=assistant.id)
        assert check.status == "completed", (prompt, check.last_error)
        assert "42" in client.beta.threads.messages.list(thread_id=other.id).data[0].content[0].text.value
    client.close()
