"""Server-sent events: a response that reads a run's event log."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from spindle.api.context import ApiShape
from spindle.api.shapes import render_event_data
from spindle.engine.events import sse_error_frame, sse_frame
from spindle.runtime import Runtime
from spindle.services.runs import INCLUDE_VALUES, shape_step
from spindle.store.base import StoredEvent

log = logging.getLogger(__name__)


def _filtered(item: StoredEvent, include: list[str]) -> StoredEvent:
    """Step events show file_search result content only when the run's ``include[]`` asked
    for it — the same rule as the steps endpoints apply when reading."""
    if INCLUDE_VALUES[0] in include or not item.event.startswith("thread.run.step.") or item.event.endswith(".delta"):
        return item
    step: dict[str, Any] = json.loads(item.data)
    return StoredEvent(item.seq, item.event, json.dumps(shape_step(step, include), separators=(",", ":")))


def event_stream(runtime: Runtime, run: dict[str, Any], shape: ApiShape, after_seq: int = 0) -> StreamingResponse:
    run_id = run["id"]
    include = list(run.get("_include") or [])

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for item in runtime.events.follow(run_id, after_seq):
                item = _filtered(item, include)
                yield sse_frame(StoredEvent(item.seq, item.event, render_event_data(item.data, shape)))
        except Exception:  # our bug; the client still gets a well-formed end
            log.exception("stream of run %s failed", run_id)
            yield sse_error_frame("The server had an error while streaming this run.")
            yield b"event: done\ndata: [DONE]\n\n"

    # When the client goes away Starlette cancels this generator: the reader stops, the run
    # (an engine task) does not.
    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
