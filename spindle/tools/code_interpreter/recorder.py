"""Collect one call's outputs as they arrive, stream them into the run step, save images.

The step shows ``outputs`` as a list; in a stream each delta names the ``index`` it extends,
and the SDK concatenates string deltas of the same index. So the logs get one index (at
their first character) and keep receiving chunks; each image gets the next index once its
File exists. The final list (``step_outputs``) uses the same indexes, so what a streaming
client accumulated matches the completed step.
"""

from __future__ import annotations

from typing import Any

from spindle.sandbox import ImageOutput, Output
from spindle.tools.base import RunContext, ToolCallSink
from spindle.tools.code_interpreter.render import head_size, output_text, truncate

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg"}


class CallRecorder:
    def __init__(self, ctx: RunContext, call_id: str, sink: ToolCallSink, max_chars: int) -> None:
        self._ctx = ctx
        self._call_id = call_id
        self._sink = sink
        self._max_chars = max_chars
        self._logs: list[str] = []
        self._logs_len = 0
        self._streamed = 0  # characters of logs already sent (only the head is streamed)
        self._logs_index: int | None = None
        self._slots: list[dict[str, Any]] = []  # step outputs in index order; logs filled at the end
        self.image_file_ids: list[str] = []

    async def on_output(self, output: Output) -> None:
        if isinstance(output, ImageOutput):
            await self._add_image(output)
            return
        text = output_text(output)
        if text:
            await self.add_text(text)

    async def add_text(self, text: str) -> None:
        self._logs.append(text)
        self._logs_len += len(text)
        if self._logs_index is None:
            self._logs_index = len(self._slots)
            self._slots.append({"type": "logs", "logs": ""})
        # Stream only what is sure to survive truncation (the head), so the client's
        # accumulated logs are always a prefix of the final ones.
        budget = head_size(self._max_chars) - self._streamed
        chunk = text[: max(0, budget)]
        if chunk:
            self._streamed += len(chunk)
            await self._emit({"index": self._logs_index, "type": "logs", "logs": chunk})

    async def _add_image(self, image: ImageOutput) -> None:
        n = len(self.image_file_ids) + 1
        filename = f"{self._call_id}-image-{n}.{_EXTENSIONS.get(image.mime, 'png')}"
        created = await self._ctx.runtime.files.create(
            self._ctx.project, filename=filename, data=image.data, purpose="assistants_output"
        )
        file_id = str(created["id"])
        self.image_file_ids.append(file_id)
        entry = {"type": "image", "image": {"file_id": file_id}}
        index = len(self._slots)
        self._slots.append(entry)
        await self._emit({"index": index, **entry})

    async def _emit(self, output: dict[str, Any]) -> None:
        await self._sink({"type": "code_interpreter", "code_interpreter": {"outputs": [output]}})

    @property
    def logs(self) -> str:
        """The full logs, truncated in the middle when too long."""
        return truncate("".join(self._logs), self._max_chars)

    def step_outputs(self) -> list[dict[str, Any]]:
        outputs = [dict(slot) for slot in self._slots]
        if self._logs_index is not None:
            outputs[self._logs_index] = {"type": "logs", "logs": self.logs}
        return outputs
