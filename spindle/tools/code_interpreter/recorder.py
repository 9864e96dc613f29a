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
from spindle.tools.code_interpreter.quota import CallQuota
from spindle.tools.code_interpreter.render import head_size, output_text

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg"}


class CallRecorder:
    """Holds at most ``max_chars`` of logs (the head and a rolling tail), whatever the code prints."""

    def __init__(
        self,
        ctx: RunContext,
        call_id: str,
        sink: ToolCallSink,
        max_chars: int,
        max_images: int,
        quota: CallQuota,
    ) -> None:
        self._ctx = ctx
        self._quota = quota
        self._call_id = call_id
        self._sink = sink
        self._head_limit = head_size(max_chars)
        self._tail_limit = max_chars - self._head_limit
        self._head = ""
        self._tail = ""
        self._total = 0  # characters of logs seen
        self._logs_index: int | None = None
        self._slots: list[dict[str, Any]] = []  # step outputs in index order; logs filled at the end
        self._max_images = max_images
        self.image_file_ids: list[str] = []
        self.images_dropped = 0

    async def on_output(self, output: Output) -> None:
        if isinstance(output, ImageOutput):
            if len(self.image_file_ids) < self._max_images:
                await self._add_image(output)
            else:
                self.images_dropped += 1
            return
        text = output_text(output)
        if text:
            await self.add_text(text)

    async def add_text(self, text: str) -> None:
        self._total += len(text)
        if self._logs_index is None:
            self._logs_index = len(self._slots)
            self._slots.append({"type": "logs", "logs": ""})
        # Only the head is streamed: it is sure to survive truncation, so what a client
        # accumulates is always a prefix of the final logs.
        chunk = text[: max(0, self._head_limit - len(self._head))]
        if chunk:
            self._head += chunk
            await self._emit({"index": self._logs_index, "type": "logs", "logs": chunk})
        rest = text[len(chunk) :]
        if rest:
            self._tail = (self._tail + rest)[-self._tail_limit :] if self._tail_limit else ""

    async def _add_image(self, image: ImageOutput) -> None:
        n = len(self.image_file_ids) + 1
        filename = f"{self._call_id}-image-{n}.{_EXTENSIONS.get(image.mime, 'png')}"
        created = await self._quota.create(filename, image.data)
        if created is None:  # over a byte quota: counted and noted by the quota
            return
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
        """The logs, cut in the middle with a note when longer than ``max_chars``."""
        dropped = self._total - len(self._head) - len(self._tail)
        if dropped <= 0:
            return self._head + self._tail
        return f"{self._head}\n[... {dropped} characters truncated ...]\n{self._tail}"

    def step_outputs(self) -> list[dict[str, Any]]:
        outputs = [dict(slot) for slot in self._slots]
        if self._logs_index is not None:
            outputs[self._logs_index] = {"type": "logs", "logs": self.logs}
        return outputs
