"""Code Interpreter through the real app, the real run engine and the official SDK.

The model is the scripted upstream of ``tests/upstream``: it calls ``python`` with the code a
test gives it, then answers. Everything else is real, the sandbox included: these are the
seed's snippets (upload, assistant with code_interpreter, thread, run, messages, download).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from spindle.app import create_app
from spindle.settings import ServerSettings, Settings
from tests.sandbox.helpers import sandbox_env, sandbox_unavailable
from tests.upstream.server import UpstreamHandle, start_in_thread

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PLOT = (
    "import pandas as pd, matplotlib.pyplot as plt\n"
    "df = pd.read_csv('/mnt/data/sales.csv')\n"
    "print('total', df.amount.sum())\n"
    "df.plot(x='month', y='amount')\n"
    "plt.show()\n"
    "df.to_csv('/mnt/data/out.csv', index=False)"
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamHandle]:
    _, handle = start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(upstream: UpstreamHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    env = {
        **sandbox_env(),
        "SPINDLE_SANDBOX_POOL_SIZE": "1",
        "SPINDLE_SANDBOX_MEMORY_MB": "768",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = Settings(
            server=ServerSettings(
                data_dir=tmp_path_factory.mktemp("e2e") / "data", llm_base_url=upstream.base_url
            )
        )
        http = TestClient(create_app(settings), raise_server_exceptions=False)
        http.__enter__()
    try:
        sandbox = http.app.state.runtime.extensions["sandbox"]  # type: ignore[attr-defined]
        http.portal.call(sandbox.ready)  # type: ignore[union-attr]
        yield openai.OpenAI(
            base_url="http://testserver/v1", api_key="sk-test", http_client=http, max_retries=0
        )
    except Exception as exc:
        sandbox_unavailable(exc)
    finally:
        http.__exit__(None, None, None)


def python_call(code: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "python", "arguments": json.dumps({"code": code})}], "chunk_chars": 7}


def wait(client: openai.OpenAI, thread_id: str, run_id: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        if run.status not in ("queued", "in_progress"):
            return run
        time.sleep(0.05)
    raise AssertionError("run did not finish")


def test_seed_flow_upload_run_download(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    upstream.script(
        "chart the sales",
        [
            python_call(PLOT),
            {"content": "Total is 60. [Download the data](sandbox:/mnt/data/out.csv)"},
        ],
    )
    uploaded = client.files.create(
        file=("sales.csv", io.BytesIO(b"month,amount\njan,10\nfeb,30\nmar,20\n")), purpose="assistants"
    )
    assistant = client.beta.assistants.create(
        model="m",
        instructions="You analyse data.",
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}},
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "chart the sales"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    run = wait(client, thread.id, run.id)
    assert run.status == "completed", run.last_error

    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    tool_step = next(s for s in steps if s.type == "tool_calls")
    [tool_call] = tool_step.step_details.tool_calls
    assert tool_call.type == "code_interpreter" and tool_call.code_interpreter.input == PLOT
    outputs = tool_call.code_interpreter.outputs
    assert outputs[0].type == "logs" and outputs[0].logs.startswith("total 60")
    image_id = outputs[1].image.file_id

    # The model was told about the file and got the output back.
    sent = upstream.requests()
    assert "/mnt/data/sales.csv" in json.dumps(sent[0]["messages"])
    assert any(m.get("role") == "tool" and "total 60" in json.dumps(m) for m in sent[-1]["messages"])

    [message] = [
        m for m in client.beta.threads.messages.list(thread_id=thread.id).data if m.role == "assistant"
    ]
    parts = {p.type: p for p in message.content}
    assert parts["image_file"].image_file.file_id == image_id
    text = parts["text"].text
    [annotation] = text.annotations
    assert annotation.type == "file_path" and annotation.text == "sandbox:/mnt/data/out.csv"
    assert text.value[annotation.start_index : annotation.end_index] == annotation.text

    png = client.files.content(image_id).read()
    assert Image.open(io.BytesIO(png)).format == "PNG"
    csv = client.files.content(annotation.file_path.file_id).read()
    assert csv.startswith(b"month,amount")
    assert client.files.retrieve(image_id).purpose == "assistants_output"


def test_state_is_kept_across_runs_and_errors_are_readable(
    client: openai.OpenAI, upstream: UpstreamHandle
) -> None:
    upstream.script("define it", [python_call("answer = 6 * 7"), {"content": "defined"}])
    upstream.script(
        "use it", [python_call("answer / 0"), python_call("print(answer)"), {"content": "42 it is"}]
    )
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "define it"}])
    first = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert first.status == "completed", first.last_error
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="use it")
    second = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert second.status == "completed", second.last_error
    steps = client.beta.threads.runs.steps.list(run_id=second.id, thread_id=thread.id, order="asc").data
    logs = [
        tc.code_interpreter.outputs[0].logs
        for s in steps
        if s.type == "tool_calls"
        for tc in s.step_details.tool_calls
    ]
    assert "ZeroDivisionError" in logs[0] and "\x1b[" not in logs[0]
    assert logs[1].strip() == "42"
    client.beta.threads.delete(thread.id)


def test_streamed_step_shows_code_then_outputs(client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    code = "for i in range(3):\n    print('row', i)"
    upstream.script("stream the code", [python_call(code), {"content": "done"}])
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "stream the code"}])
    inputs, logs = [], []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            if event.event == "thread.run.step.delta":
                for tc in event.data.delta.step_details.tool_calls or []:
                    if tc.code_interpreter is None:
                        continue
                    if tc.code_interpreter.input:
                        inputs.append(tc.code_interpreter.input)
                    logs += [o.logs for o in tc.code_interpreter.outputs or [] if o.type == "logs"]
        final = stream.get_final_run()
    assert final.status == "completed"
    assert len(inputs) > 1 and "".join(inputs) == code
    assert "".join(logs) == "row 0\nrow 1\nrow 2\n"
