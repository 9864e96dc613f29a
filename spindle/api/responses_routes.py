"""Routes: the Responses API (``/v1/responses``). Parse, call ``ResponseService``, shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from spindle.api.common import json_body, paginate_items, request_context, runtime_of, validate
from spindle.api.context import RequestContext
from spindle.api.responses import SafeJSONResponse as JSONResponse
from spindle.api.responses import encode_json
from spindle.errors import InvalidRequestError
from spindle.responses.render import ResponseRenderer, rendered
from spindle.responses.service import ResponseService
from spindle.schemas.common import dump
from spindle.schemas.responses import INCLUDE_VALUES, InputTokensFields, ResponseFields

log = logging.getLogger(__name__)
router = APIRouter()


def responses(request: Request) -> ResponseService:
    return runtime_of(request).extensions["responses"]  # type: ignore[no-any-return]


def _fields(model: Any) -> dict[str, Any]:
    fields = dump(model)
    conversation = fields.get("conversation")
    if isinstance(conversation, dict):
        fields["conversation"] = conversation["id"]
    return fields


def _frame(out: dict[str, Any]) -> bytes:
    return b"event: " + out["type"].encode() + b"\ndata: " + encode_json(out) + b"\n\n"


def _sse(events: AsyncIterator[dict[str, Any]], response_id: str,
         on_end: Any = None) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        sequence = 0
        try:
            async for out in events:
                sequence = out["sequence_number"]
                yield _frame(out)
        except Exception:  # our bug; the client still gets a well-formed end
            log.exception("stream of response %s failed", response_id)
            yield _frame({"type": "error", "sequence_number": sequence + 1, "code": "server_error", "param": None,
                          "message": "The server had an error while streaming this response."})
        finally:
            if on_end is not None:
                await asyncio.shield(on_end())

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


@router.post("/responses", response_model=None)
async def create_response(request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    fields = _fields(validate(ResponseFields, await json_body(request)))
    service = responses(request)
    run = await service.create(ctx.project, fields)

    async def forget() -> None:  # store=false: nothing is kept once the answer is out
        await service.purge(run)

    keep = fields.get("store") is not False
    if fields.get("stream"):
        stream = rendered(runtime_of(request).events.follow(run["id"]), ResponseRenderer(run))
        return _sse(stream, run["id"], None if keep else forget)
    if fields.get("background"):
        return JSONResponse(ResponseRenderer(run).response)  # as created: queued
    try:
        return JSONResponse(await service.wait(ctx.project, run))
    finally:
        if not keep:
            await asyncio.shield(forget())


@router.post("/responses/input_tokens")
async def input_tokens(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    fields = _fields(validate(InputTokensFields, await json_body(request)))
    return await responses(request).count_input_tokens(ctx.project, fields)


@router.get("/responses/{response_id}", response_model=None)
async def retrieve_response(response_id: str, request: Request,
                            ctx: RequestContext = Depends(request_context)) -> Response:
    params = request.query_params
    service = responses(request)
    include = params.getlist("include[]") + params.getlist("include")
    for value in include:
        if value not in INCLUDE_VALUES:
            raise InvalidRequestError(f"Invalid value for 'include': '{value[:100]}'. Supported: {list(INCLUDE_VALUES)}.",
                                      param="include", code="invalid_value")
    if params.get("stream") in ("true", "1", "True"):
        raw = params.get("starting_after") or "0"
        if not raw.isdigit():
            raise InvalidRequestError(f"Invalid 'starting_after': expected an integer, got '{raw[:40]}'.",
                                      param="starting_after", code="invalid_value")
        await service.run_of(ctx.project, response_id)  # 404 before the stream starts
        return _sse(service.stream(ctx.project, response_id, int(raw), include), response_id)
    return JSONResponse(await service.get(ctx.project, response_id, include))


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, request: Request,
                          ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await responses(request).delete(ctx.project, response_id)


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request,
                          ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await responses(request).cancel(ctx.project, response_id)


@router.get("/responses/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request,
                           ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    items = await responses(request).input_items(ctx.project, response_id)
    return paginate_items(request, items)


