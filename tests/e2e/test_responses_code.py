"""Code Interpreter in the Responses API and the Containers API with a real sandbox: the real
server, the official SDK, the scripted upstream."""

from __future__ import annotations

import json
from typing import Any

import harness
import openai
import pytest

pytestmark = pytest.mark.min_sdk(1, 66)

CODE = ("import matplotlib.pyplot as plt\n"
        "rows = open('/mnt/data/points.csv').read().split()\n"
        "total = sum(int(r.split(',')[1]) for r in rows[1:])\n"
        "plt.plot([1, 2, 3], [3, 11, 14]); plt.show()\n"
        "open('/mnt/data/summary.csv', 'w').write(f'total\\n{total}\\n')\n"
        "print('total', total)\n")


def _call(code: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "python", "arguments": json.dumps({"code": code})}], "chunk_chars": 9}


@pytest.fixture
def client(spindle_server: harness.SpindleServer) -> Any:
    made = harness.make_client("openai", spindle_server.base_url)
    yield made
    made.close()


def test_plot_and_csv_in_a_container(client: Any, upstream: harness.Upstream) -> None:
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    points = client.files.create(file=("points.csv", b"x,y\n1,3\n2,11\n3,14\n"), purpose="assistants")
    upstream.script("chart the points", [
        _call(CODE), {"content": "The total is 28. Download [the summary](sandbox:/mnt/data/summary.csv)."}])
    tools = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [points.id]}}]
    with client.responses.stream(model="gpt-4o", input="chart the points", tools=tools,
                                 include=["code_interpreter_call.outputs"]) as stream:
        events = list(stream)
    adapter: Any = TypeAdapter(ResponseStreamEvent)
    for event in events:  # every event is the SDK's own model for its type
        assert isinstance(event, type(adapter.validate_python(event.model_dump(warnings=False)))), event.type
    kinds = [e.type for e in events]
    start = kinds.index("response.code_interpreter_call.in_progress")
    assert kinds[start - 1] == "response.output_item.added"
    assert "response.code_interpreter_call_code.delta" in kinds
    assert kinds.index("response.code_interpreter_call_code.done") < kinds.index(
        "response.code_interpreter_call.interpreting") < kinds.index("response.code_interpreter_call.completed")
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    response = events[-1].response
    assert response.status == "completed", response.error
    call, message = response.output
    assert call.type == "code_interpreter_call" and call.status == "completed" and call.code == CODE
    deltas = "".join(e.delta for e in events if e.type == "response.code_interpreter_call_code.delta")
    assert deltas == CODE
    assert call.container_id.startswith("cntr_")
    logs = [o for o in call.outputs if o.type == "logs"]
    images = [o for o in call.outputs if o.type == "image"]
    assert logs and "total 28" in logs[0].logs
    assert images and images[0].url.startswith("data:image/png;base64,")
    text = message.content[0]
    assert text.text == "The total is 28. Download [the summary](sandbox:/mnt/data/summary.csv)."
    [cite] = text.annotations
    assert (cite.type, cite.container_id, cite.filename) == ("container_file_citation", call.container_id,
                                                             "summary.csv")
    assert text.text[cite.start_index:cite.end_index] == "sandbox:/mnt/data/summary.csv"
    assert client.containers.files.content.retrieve(cite.file_id, container_id=call.container_id).read() == \
        b"total\n28\n"
    files = {f.path: f.source for f in client.containers.files.list(call.container_id).data}
    assert files == {"/mnt/data/points.csv": "user", "/mnt/data/summary.csv": "assistant"}
    stored = client.responses.retrieve(response.id)  # as streamed
    assert stored.output[0] == call and stored.output[1].content[0].annotations == text.annotations
    # The next response in the chain runs in the same container: the same variables.
    upstream.script("and the total again", [_call("print('again', total * 2)"), {"content": "56."}])
    follow = client.responses.create(model="gpt-4o", input="and the total again", previous_response_id=response.id,
                                     tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
                                     include=["code_interpreter_call.outputs"])
    assert follow.output[0].container_id == call.container_id
    assert "again 56" in follow.output[0].outputs[0].logs
    # A container named by id works too; an unknown one is a 404 naming the tool's container.
    upstream.script("by id", [_call("print('named', total)"), {"content": "28."}])
    named = client.responses.create(model="gpt-4o", input="by id", include=["code_interpreter_call.outputs"],
                                    tools=[{"type": "code_interpreter", "container": call.container_id}])
    assert "named 28" in named.output[0].outputs[0].logs
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="gpt-4o", input="x", tools=[{"type": "code_interpreter",
                                                                   "container": "cntr_missing"}])
    assert missing.value.body["param"] == "tools[0].container"
    with pytest.raises(openai.BadRequestError) as bad_file:
        client.responses.create(model="gpt-4o", input="x", tools=[{"type": "code_interpreter", "container": {
            "type": "auto", "file_ids": ["file-missing"]}}])
    assert bad_file.value.body["param"] == "tools[0].container.file_ids[0]"
    client.containers.delete(call.container_id)
    # Its container deleted, the chain's next auto response gets a new one (no variables).
    upstream.script("after the delete", [_call("print('defined' if 'total' in globals() else 'fresh')"),
                                         {"content": "Fresh."}])
    fresh = client.responses.create(model="gpt-4o", input="after the delete", previous_response_id=follow.id,
                                    tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
                                    include=["code_interpreter_call.outputs"])
    assert fresh.output[0].container_id not in ("", call.container_id)
    assert fresh.output[0].outputs[0].logs.strip() == "fresh"
    client.containers.delete(fresh.output[0].container_id)


def test_container_files_reach_the_session(client: Any, upstream: harness.Upstream) -> None:
    container = client.containers.create(name="manual")
    client.containers.files.create(container.id, file=("hello.txt", b"hello from a container file"))
    upstream.script("read the file", [_call("print(open('/mnt/data/hello.txt').read())"), {"content": "Read."}])
    response = client.responses.create(model="gpt-4o", input="read the file",
                                       tools=[{"type": "code_interpreter", "container": container.id}])
    assert response.output[0].outputs is None  # not asked for
    shown = client.responses.retrieve(response.id, include=["code_interpreter_call.outputs"])
    assert "hello from a container file" in shown.output[0].outputs[0].logs
    assert client.containers.retrieve(container.id).last_active_at >= container.last_active_at
    client.containers.delete(container.id)


def test_a_conversation_keeps_its_container(client: Any, upstream: harness.Upstream) -> None:
    conversation = client.conversations.create()
    tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    upstream.script("set a variable", [_call("answer = 41 + 1"), {"content": "Set."}])
    first = client.responses.create(model="gpt-4o", input="set a variable", conversation=conversation.id, tools=tools)
    upstream.script("read the variable", [_call("print('answer', answer)"), {"content": "42."}])
    second = client.responses.create(model="gpt-4o", input="read the variable", conversation=conversation.id,
                                     tools=tools, include=["code_interpreter_call.outputs"])
    assert second.output[0].container_id == first.output[0].container_id
    assert "answer 42" in second.output[0].outputs[0].logs
    client.containers.delete(first.output[0].container_id)


def _logs(response: Any) -> str:
    return "".join(o.logs for item in response.output if item.type == "code_interpreter_call"
                   for o in item.outputs or [] if o.type == "logs")


def test_a_container_has_its_memory_limit(client: Any, upstream: harness.Upstream) -> None:
    """The container's memory_limit ("1g", the default) holds in its session although the
    server allows a session 2048 MiB: a larger allocation is a MemoryError, shown in the
    call's logs as OpenAI shows it, and the session's variables survive it."""
    container = client.containers.create(name="small")
    assert container.memory_limit == "1g"
    code = ("import resource\nkept = 41\nprint('limit', resource.getrlimit(resource.RLIMIT_DATA)[0])\n"
            "x = bytearray(1400 * 1024**2)\n")
    upstream.script("allocate a lot", [_call(code), _call("print('kept', kept + 1)"), {"content": "Too big."}])
    response = client.responses.create(model="gpt-4o", input="allocate a lot", include=["code_interpreter_call.outputs"],
                                       tools=[{"type": "code_interpreter", "container": container.id}])
    logs = _logs(response)
    assert f"limit {1024 * 1024 * 1024}" in logs and "MemoryError" in logs and "kept 42" in logs, logs
    with pytest.raises(openai.BadRequestError) as refused:  # more than this server gives a session
        client.containers.create(name="big", memory_limit="4g")
    assert refused.value.body["param"] == "memory_limit"
    with pytest.raises(openai.BadRequestError) as no_network:
        client.containers.create(name="net", network_policy={"type": "allowlist", "allowed_domains": ["pypi.org"]})
    assert no_network.value.body["param"] == "network_policy.type"
    client.containers.delete(container.id)


def test_a_deleted_container_file_leaves_the_session(client: Any, upstream: harness.Upstream) -> None:
    container = client.containers.create(name="deletes")
    uploaded = client.containers.files.create(container.id, file=("hello.txt", b"hello"))
    tools = [{"type": "code_interpreter", "container": container.id}]
    upstream.script("write a file", [_call("state = 7\nprint(open('/mnt/data/hello.txt').read())\n"
                                           "open('/mnt/data/out.txt', 'w').write('made here')"), {"content": "Done."}])
    first = client.responses.create(model="gpt-4o", input="write a file", tools=tools,
                                    include=["code_interpreter_call.outputs"])
    assert "hello" in _logs(first)
    written = {f.path: f for f in client.containers.files.list(container.id).data}
    assert set(written) == {"/mnt/data/hello.txt", "/mnt/data/out.txt"}, written
    assert written["/mnt/data/out.txt"].source == "assistant"
    client.containers.files.delete(uploaded.id, container_id=container.id)
    client.containers.files.delete(written["/mnt/data/out.txt"].id, container_id=container.id)
    upstream.script("list the files", [_call("import os\nprint(sorted(os.listdir('/mnt/data')), state)"),
                                       {"content": "Listed."}])
    second = client.responses.create(model="gpt-4o", input="list the files", tools=tools,
                                     include=["code_interpreter_call.outputs"])
    assert _logs(second).strip() == "[] 7"  # the files are gone, the session (and its state) is not
    assert client.containers.files.list(container.id).data == []
    client.containers.delete(container.id)
