"""The renderer's code_interpreter_call items from a log like the engine writes (no sandbox):
code deltas, the call's outputs only when included, figures kept out of the message's parts,
and a sandbox link turned into a container_file_citation at the right indexes."""

from __future__ import annotations

from typing import Any

import pydantic
from openai.types.responses import Response, ResponseStreamEvent

from spindle.responses.render import BUILTIN_DONE, ResponseRenderer

_EVENT: Any = pydantic.TypeAdapter(ResponseStreamEvent)
RUN = {"id": "resp_1", "created_at": 1, "model": "m", "status": "in_progress",
       "_response": {"container_id": "cntr_1", "tools": [{"type": "code_interpreter", "container": "cntr_1"}]}}
TEXT = "See [the CSV](sandbox:/mnt/data/out.csv) and the chart."


def _log() -> list[tuple[str, Any]]:
    link = "sandbox:/mnt/data/out.csv"
    start = TEXT.index(link)
    delta = {"type": "code_interpreter", "code_interpreter": {"input": "print(1)"}}
    return [
        ("thread.run.created", RUN), ("thread.run.in_progress", RUN),
        ("thread.run.step.delta", {"id": "step_1", "delta": {"step_details": {"type": "tool_calls", "tool_calls": [
            {"index": 0, "id": "call_a", "type": "code_interpreter", "code_interpreter": {"input": "print("}}]}}}),
        ("thread.run.step.delta", {"id": "step_1", "delta": {"step_details": {"type": "tool_calls", "tool_calls": [
            {"index": 0, **delta, "code_interpreter": {"input": "1)"}}]}}}),
        (BUILTIN_DONE, {"id": "call_a", "type": "code_interpreter", "code": "print(1)\n", "container_id": "cntr_1",
                        "outputs": [{"type": "logs", "logs": "1\n"}, {"type": "image", "url": "data:image/png;base64,AA=="}],
                        "files": {"file-x": {"file_id": "cfile_9", "filename": "out.csv"}}}),
        ("thread.message.created", {"id": "msg_1", "content": [{"type": "image_file", "image_file": {"file_id": "f"}}]}),
        ("thread.message.delta", {"id": "msg_1", "delta": {"content": [
            {"index": 1, "type": "text", "text": {"value": TEXT, "annotations": [
                {"type": "file_path", "text": link, "start_index": start, "end_index": start + len(link),
                 "file_path": {"file_id": "file-x"}}]}}]}}),
        ("thread.message.completed", {"id": "msg_1", "content": [
            {"type": "image_file", "image_file": {"file_id": "f"}},
            {"type": "text", "text": {"value": TEXT, "annotations": [
                {"type": "file_path", "text": link, "start_index": start, "end_index": start + len(link),
                 "file_path": {"file_id": "file-x"}}]}}]}),
        ("thread.run.completed", {**RUN, "status": "completed", "completed_at": 2}),
    ]


def _render(include: list[str] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    renderer = ResponseRenderer(RUN, include)
    events = [out for name, data in _log() for out in renderer.feed(name, data)]
    for out in events:
        _EVENT.validate_python(out)
    return events, renderer.response


def test_code_call_events_and_citation() -> None:
    events, response = _render(["code_interpreter_call.outputs"])
    kinds = [e["type"] for e in events]
    assert kinds[:9] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.delta",
                         "response.code_interpreter_call_code.delta", "response.code_interpreter_call_code.delta",
                         "response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting"]
    # The last delta carries what the streamed arguments did not (the trailing newline).
    assert "".join(e["delta"] for e in events if e["type"].endswith("_code.delta")) == "print(1)\n"
    parsed = Response.model_validate(response)
    call, message = parsed.output
    assert call.type == "code_interpreter_call" and call.container_id == "cntr_1" and call.status == "completed"
    assert [o.type for o in call.outputs or []] == ["logs", "image"]
    assert message.type == "message" and len(message.content) == 1  # the figure is not a message part
    text = message.content[0]
    assert text.type == "output_text" and text.text == TEXT
    [cite] = text.annotations
    assert cite.type == "container_file_citation" and (cite.file_id, cite.filename, cite.container_id) == (
        "cfile_9", "out.csv", "cntr_1")
    assert TEXT[cite.start_index:cite.end_index] == "sandbox:/mnt/data/out.csv"
    added = next(e for e in events if e["type"] == "response.content_part.added")
    assert added["content_index"] == 0


def test_outputs_only_when_included() -> None:
    _, response = _render(None)
    assert response["output"][0]["outputs"] is None and response["output"][0]["code"] == "print(1)\n"
