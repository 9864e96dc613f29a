"""Upstream deltas in batches: the deltas that arrive while the previous batch is being
written go into the next one (adjacent text merged), so a fast model costs one store commit
per batch, not one per token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from spindle.llm.client import ChatDelta, TextDelta


async def coalesced(source: AsyncIterator[ChatDelta]) -> AsyncIterator[list[ChatDelta]]:
    """Batch upstream deltas that arrive while the previous batch is being written, so a
    fast model costs one store commit per batch, not per token."""
    queue: asyncio.Queue[ChatDelta | BaseException | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait(item)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            queue.put_nowait(exc)
            return
        queue.put_nowait(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            first = await queue.get()
            batch: list[ChatDelta] = []
            ended = False
            for item in [first, *drain(queue)]:
                if item is None:
                    ended = True
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, TextDelta) and batch and isinstance(batch[-1], TextDelta):
                    batch[-1] = TextDelta(batch[-1].text + item.text)
                else:
                    batch.append(item)
            if batch:
                yield batch
            if ended:
                return
    finally:
        task.cancel()


def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
