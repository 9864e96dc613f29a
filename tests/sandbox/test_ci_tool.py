"""The code_interpreter tool class against a real sandbox and a tiny fake runtime (files in a dict).

What the run engine relies on: the function offered, the streamed code, the step's outputs
and their stream deltas, Files for figures and saved files, annotations, instructions.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from spindle.errors import NotFoundError
from spindle.sandbox import SessionManager
from spindle.tools.base import RunContext, ToolCall, ToolResult, ToolUnavailable
from spindle.tools.code_interpreter import CodeInterpreterTool, build
from tests.sandbox.helpers import LoopThread, sandbox_settings


class FakeFiles:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}

    def add(self, filename: str, data: bytes, purpose: str = "assistants") -> str:
        file_id = "file-" + secrets.token_hex(6)
        self.objects[file_id] = {
            "id": file_id,
            "object": "file",
            "filename": filename,
            "bytes": len(data),
            "purpose": purpose,
        }
        self.blobs[file_id] = data
        return file_id

    async def get(self, project: str, file_id: str) -> dict[str, Any]:
        if file_id not in self.objects:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id")
        return self.objects[file_id]

    async def read(self, project: str, file_id: str) -> bytes:
        await self.get(project, file_id)
        return self.blobs[file_id]

    async def create(self, project: str, *, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        return self.objects[self.add(filename, data, purpose)]

    @property
    def store(self) -> FakeFiles:
        return self  # what the tool's project quota reads: ``files.store.scan``

    async def scan(
        self, kind: str, where: dict[str, Any] | None = None, *, project: str | None = None
    ) -> list[Any]:
        assert kind == "file"
        return [o for o in self.objects.values() if all(o.get(k) == v for k, v in (where or {}).items())]


def fake_runtime(tmp_path: Path, **sandbox: Any) -> Any:
    settings = SimpleNamespace(data_dir=tmp_path / "data", sandbox=sandbox_settings(**sandbox))
    return SimpleNamespace(settings=settings, files=FakeFiles(), extensions={})


def make_ctx(
    runtime: Any,
    thread_id: str,
    *,
    assistant_files: list[str] = (),
    thread_files: list[str] = (),  # type: ignore[assignment]
    attachments: list[str] = (),
) -> RunContext:  # type: ignore[assignment]
    return RunContext(
        runtime=runtime,
        project="proj",
        run={"id": "run_1"},
        thread={"id": thread_id, "tool_resources": {"code_interpreter": {"file_ids": list(thread_files)}}},
        assistant={
            "id": "asst_1",
            "tool_resources": {"code_interpreter": {"file_ids": list(assistant_files)}},
        },
        tools=[{"type": "code_interpreter"}],
        attachment_file_ids={"code_interpreter": list(attachments)},
    )


class Sink:
    def __init__(self) -> None:
        self.deltas: list[dict[str, Any]] = []

    async def __call__(self, delta: dict[str, Any]) -> None:
        self.deltas.append(delta)

    def outputs(self) -> list[dict[str, Any]]:
        return [o for d in self.deltas for o in d["code_interpreter"]["outputs"]]


@pytest.fixture
def runtime(tmp_path: Path) -> Any:
    return fake_runtime(tmp_path)


@pytest.fixture
def tool(runtime: Any, manager: SessionManager, loop: LoopThread) -> Iterator[CodeInterpreterTool]:
    # The shared manager, so these tests do not pay for another provider start.
    tool = CodeInterpreterTool(runtime, manager, manager.settings)
    yield tool


def call(
    loop: LoopThread,
    tool: CodeInterpreterTool,
    ctx: RunContext,
    code: str | None = None,
    *,
    arguments: str | None = None,
) -> tuple[ToolResult, Sink]:
    sink = Sink()
    args = arguments if arguments is not None else json.dumps({"code": code})
    result = loop.run(tool.call(ctx, ToolCall("call_" + secrets.token_hex(4), "python", args), sink))
    return result, sink


def test_offers_one_python_function(tool: CodeInterpreterTool, runtime: Any) -> None:
    ctx = make_ctx(runtime, "thread_x")
    [spec] = tool.functions(ctx)
    assert spec["type"] == "function" and spec["function"]["name"] == "python"
    assert spec["function"]["parameters"]["required"] == ["code"]
    assert tool.initial_step_tool_call("python") == {
        "type": "code_interpreter",
        "code_interpreter": {"input": "", "outputs": []},
    }


def test_input_streams_as_the_model_writes_it(tool: CodeInterpreterTool) -> None:
    code = 'import math\nprint("tab\\there", "\u00e9\U0001f600", r"\\d+")\n'
    arguments = json.dumps({"code": code})
    sent, streamed = 0, ""
    for size in (1, 3, 7):
        sent, streamed = 0, ""
        for end in range(size, len(arguments) + size, size):
            delta, sent = tool.input_delta("python", arguments[:end], sent)
            if delta is not None:
                assert delta["type"] == "code_interpreter"
                streamed += delta["code_interpreter"]["input"]
        assert streamed == code


def test_full_call_with_files_figure_and_links(
    tool: CodeInterpreterTool, runtime: Any, loop: LoopThread
) -> None:
    files: FakeFiles = runtime.files
    sales = files.add("sales.csv", b"month,amount\njan,10\nfeb,30\nmar,20\n")
    clash = files.add("sales.csv", b"month,amount\napr,1\n")
    notes = files.add("notes.md", b"# notes\n")
    thread_id = "thread_" + secrets.token_hex(4)
    ctx = make_ctx(
        runtime,
        thread_id,
        assistant_files=[sales],
        thread_files=[clash, "file-missing"],
        attachments=[notes, sales],
    )
    try:
        loop.run(tool.prepare(ctx))
        text = tool.instructions(ctx) or ""
        assert "/mnt/data/sales.csv (uploaded as 'sales.csv')" in text
        assert "/mnt/data/sales_1.csv (uploaded as 'sales.csv')" in text
        assert "/mnt/data/notes.md (uploaded as 'notes.md')" in text

        code = (
            "import pandas as pd, matplotlib.pyplot as plt\n"
            "df = pd.read_csv('/mnt/data/sales.csv')\n"
            "print('total', df.amount.sum())\n"
            "df.plot(x='month', y='amount')\n"
            "plt.show()\n"
            "df.to_csv('/mnt/data/summary report.csv', index=False)\n"
            "int(df.amount.max())"
        )
        result, sink = call(loop, tool, ctx, code)
        step = result.step_tool_call
        assert step["type"] == "code_interpreter" and step["code_interpreter"]["input"] == code
        outputs = step["code_interpreter"]["outputs"]
        assert [o["type"] for o in outputs] == ["logs", "image"]
        assert outputs[0]["logs"] == "total 60\n30\n"
        image_id = outputs[1]["image"]["file_id"]
        assert files.objects[image_id]["purpose"] == "assistants_output"
        png = Image.open(io.BytesIO(files.blobs[image_id]))
        assert png.format == "PNG"
        assert result.message_content == [{"type": "image_file", "image_file": {"file_id": image_id}}]
        # The stream: logs chunks on index 0, the image on index 1, as in the final step.
        streamed = sink.outputs()
        assert "".join(o["logs"] for o in streamed if o["type"] == "logs") == "total 60\n30\n"
        assert {o["index"] for o in streamed if o["type"] == "logs"} == {0}
        assert [o for o in streamed if o["type"] == "image"] == [
            {"index": 1, "type": "image", "image": {"file_id": image_id}}
        ]
        # The model reads the text, learns about the image and the saved file.
        assert "total 60" in result.output and "1 image displayed" in result.output
        assert "sandbox:/mnt/data/summary report.csv" in result.output
        saved = [f for f in files.objects.values() if f["filename"] == "/mnt/data/summary report.csv"]
        assert len(saved) == 1 and saved[0]["purpose"] == "assistants_output"
        assert files.blobs[saved[0]["id"]].startswith(b"month,amount")

        answer = (
            "Here is [the report](sandbox:/mnt/data/summary report.csv) and [x](sandbox:/mnt/data/other.csv)."
        )
        [annotation] = tool.annotate(ctx, answer)
        start = answer.index("sandbox:")
        assert annotation == {
            "type": "file_path",
            "text": "sandbox:/mnt/data/summary report.csv",
            "start_index": start,
            "end_index": start + len("sandbox:/mnt/data/summary report.csv"),
            "file_path": {"file_id": saved[0]["id"]},
        }
        assert tool.pending_marker("Download [it](sandbox:/mnt/da") == len("Download [it](")
        assert tool.pending_marker(answer) is None

        # Files are copied once per session: a second prepare copies nothing new.
        loop.run(tool.prepare(ctx))
        listing, _ = call(loop, tool, ctx, "import os\nprint(sorted(os.listdir('/mnt/data')))")
        assert listing.output.startswith("['notes.md', 'sales.csv', 'sales_1.csv', 'summary report.csv']")
    finally:
        loop.run(tool.on_thread_deleted("proj", thread_id))
    assert tool.manager.thread_session(f"proj/{thread_id}") is None
    assert tool.annotate(ctx, answer) == []


def test_error_then_fix(tool: CodeInterpreterTool, runtime: Any, loop: LoopThread) -> None:
    ctx = make_ctx(runtime, "thread_" + secrets.token_hex(4))
    try:
        failed, _ = call(loop, tool, ctx, "x = 5\nx / 0")
        assert "ZeroDivisionError" in failed.output and "\x1b[" not in failed.output
        logs = failed.step_tool_call["code_interpreter"]["outputs"][0]["logs"]
        assert "ZeroDivisionError" in logs and "\x1b[" not in logs
        fixed, _ = call(loop, tool, ctx, "print(x / 2)")
        assert fixed.output.strip() == "2.5"
    finally:
        loop.run(tool.on_thread_deleted("proj", ctx.thread_id))


def test_long_output_is_truncated_with_a_note(
    tool: CodeInterpreterTool, runtime: Any, loop: LoopThread
) -> None:
    ctx = make_ctx(runtime, "thread_" + secrets.token_hex(4))
    try:
        result, sink = call(loop, tool, ctx, "for i in range(20000):\n    print('line', i)\nprint('the end')")
        limit = tool.settings.max_output_chars
        assert "characters truncated" in result.output
        assert len(result.output) < limit + 200
        assert result.output.startswith("line 0\n") and result.output.rstrip().endswith("the end")
        final_logs = result.step_tool_call["code_interpreter"]["outputs"][0]["logs"]
        streamed = "".join(o["logs"] for o in sink.outputs())
        assert final_logs.startswith(streamed)
    finally:
        loop.run(tool.on_thread_deleted("proj", ctx.thread_id))


def test_bad_arguments_are_an_output_not_a_crash(
    tool: CodeInterpreterTool, runtime: Any, loop: LoopThread
) -> None:
    ctx = make_ctx(runtime, "thread_" + secrets.token_hex(4))
    result, _ = call(loop, tool, ctx, arguments='{"source": "print(1)"}')
    assert '{"code": "<python source>"}' in result.output
    raw, _ = call(loop, tool, ctx, arguments="print('raw code', 1 + 1)")  # some models skip the JSON
    assert raw.output.strip() == "raw code 2"
    loop.run(tool.on_thread_deleted("proj", ctx.thread_id))


def test_timeout_is_reported_to_the_model(runtime: Any, manager: SessionManager, loop: LoopThread) -> None:
    settings = manager.settings.model_copy(update={"call_timeout_s": 1.5})
    tool = CodeInterpreterTool(runtime, manager, settings)
    ctx = make_ctx(runtime, "thread_" + secrets.token_hex(4))
    try:
        result, _ = call(loop, tool, ctx, "import time\nstep = 1\ntime.sleep(60)")
        assert "1.5 s time limit" in result.output and "KeyboardInterrupt" in result.output
        again, _ = call(loop, tool, ctx, "print(step)")
        assert again.output.strip() == "1"
    finally:
        loop.run(tool.on_thread_deleted("proj", ctx.thread_id))


def test_expired_session_is_announced(tool: CodeInterpreterTool, runtime: Any, loop: LoopThread) -> None:
    files: FakeFiles = runtime.files
    data = files.add("data.txt", b"hello")
    ctx = make_ctx(runtime, "thread_" + secrets.token_hex(4), thread_files=[data])
    try:
        loop.run(tool.prepare(ctx))
        call(loop, tool, ctx, "state = 1")
        ts = tool.manager.thread_session(f"proj/{ctx.thread_id}")
        assert ts is not None
        ts.last_used -= tool.manager.settings.idle_timeout_s + 1
        new_ctx = make_ctx(runtime, ctx.thread_id, thread_files=[data])
        loop.run(tool.prepare(new_ctx))
        assert "expired" in (tool.instructions(new_ctx) or "")
        result, _ = call(loop, tool, new_ctx, "print(open('/mnt/data/data.txt').read())\nprint(state)")
        assert "hello" in result.output and "NameError" in result.output
    finally:
        loop.run(tool.on_thread_deleted("proj", ctx.thread_id))


def test_unavailable_sandbox_fails_the_run_with_the_reason(tmp_path: Path, loop: LoopThread) -> None:
    runtime = fake_runtime(tmp_path, bwrap_path="/nonexistent/bwrap")
    tool = build(runtime)
    assert runtime.extensions["sandbox"] is tool.manager
    loop.run(tool.start())
    try:
        with pytest.raises(ToolUnavailable, match="bubblewrap .* not found"):
            loop.run(tool.prepare(make_ctx(runtime, "thread_y")))
    finally:
        loop.run(tool.shutdown())


def test_build_start_call_shutdown(tmp_path: Path, loop: LoopThread) -> None:
    runtime = fake_runtime(tmp_path, pool_size=0, max_sessions=2)
    tool = build(runtime)
    loop.run(tool.start())
    try:
        result, _ = call(loop, tool, make_ctx(runtime, "thread_z"), "print(sum(range(10)))")
        assert result.output.strip() == "45"
    finally:
        loop.run(tool.shutdown())
