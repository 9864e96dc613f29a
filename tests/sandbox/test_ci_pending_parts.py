"""An image made in the same turn as a function call reaches the next assistant message,
although the run pauses in requires_action in between (the parts wait in the store, not in
the memory of an execution that has ended).

It starts its own app with its own cgroup parent and uid range, so it can run beside the
other sandbox tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from fastapi.testclient import TestClient

from spindle.app import create_app
from spindle.settings import ServerSettings, Settings
from tests.sandbox.helpers import sandbox_env, sandbox_unavailable
from tests.sandbox.test_ci_engine import wait
from tests.upstream.server import UpstreamHandle, start_in_thread

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamHandle]:
    _, handle = start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(upstream: UpstreamHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    env = {**sandbox_env("-pending", uid_offset=10_000_000), "SPINDLE_SANDBOX_POOL_SIZE": "1", "SPINDLE_SANDBOX_MEMORY_MB": "768"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = Settings(server=ServerSettings(data_dir=tmp_path_factory.mktemp("pending") / "data",
                                                  llm_base_url=upstream.base_url))
        http = TestClient(create_app(settings), raise_server_exceptions=False)
        http.__enter__()
    try:
        sandbox = http.app.state.runtime.extensions["sandbox"]  # type: ignore[attr-defined]
        http.portal.call(sandbox.ready)  # type: ignore[union-attr]
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="sk-test", http_client=http, max_retries=0)
    except Exception as exc:
        sandbox_unavailable(exc)
    finally:
        http.__exit__(None, None, None)


def test_image_from_a_turn_with_a_function_call_reaches_the_message(client: openai.OpenAI,
                                                                     upstream: UpstreamHandle) -> None:
    upstream.script("chart and weather", [
        {"tool_calls": [{"name": "python", "arguments": json.dumps({"code": CHART})},
                        {"name": "get_weather", "arguments": "{}"}]},
        {"content": "Here is the chart; the weather is {{last_tool}}."}])
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}, WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "chart and weather"}])
    run = wait(client, thread.id, client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id).id)
    assert run.status == "requires_action", run.last_error
    [call] = run.required_action.submit_tool_outputs.tool_calls
    run = client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                       tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}])
    run = wait(client, thread.id, run.id)
    assert run.status == "completed", run.last_error
    [message] = [m for m in client.beta.threads.messages.list(thread_id=thread.id).data if m.role == "assistant"]
    kinds = [p.type for p in message.content]
    assert kinds == ["image_file", "text"], kinds
    assert message.content[1].text.value == "Here is the chart; the weather is sunny."  # type: ignore[union-attr]
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    ci = next(c for c in steps[0].step_details.tool_calls if c.type == "code_interpreter")  # type: ignore[union-attr]
    assert message.content[0].image_file.file_id == ci.code_interpreter.outputs[-1].image.file_id  # type: ignore[union-attr]
