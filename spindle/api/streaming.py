"""Server-sent events: a response that reads a run's event log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from spindle.engine.events import sse_error_frame, sse_frame
from spindle.runtime import Runtime

log = logging.getLogger(__name__)


def event_stream(runtime: Runtime, run_id: str, after_seq: int = 0) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        try:
            async for item in runtime.events.follow(run_id, after_seq):
                yield sse_frame(item)
        except Exception:  # our bug; the client still gets a well-formed end
            log.exception("stream of run %s failed", run_id)
            yield sse_error_frame("The server had an error while streaming this run.")
            yield b"event: done\ndata: [DONE]\n\n"

    # When the client goes away Starlette cancels this generator: the reader stops, the run
    # (an engine task) does not.
    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
