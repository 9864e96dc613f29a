"""Routes: runs, create-thread-and-run, tool outputs, cancel, and run steps."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from spindle.api.common import (
    json_body,
    list_body,
    list_page,
    page_query,
    request_context,
    runtime_of,
    validate,
)
from spindle.api.context import RequestContext
from spindle.api.responses import SafeJSONResponse as JSONResponse
from spindle.api.shapes import render, render_list
from spindle.api.streaming import event_stream
from spindle.schemas.common import ThreadFields, dump
from spindle.schemas.runs import ModifyMetadata, RunFields, SubmitToolOutputs
from spindle.services.runs import RunService, check_include, shape_step

router = APIRouter()


def runs(request: Request) -> RunService:
    return runtime_of(request).extensions["runs"]  # type: ignore[no-any-return]


def _include(request: Request) -> list[str]:
    return check_include(request.query_params.getlist("include[]") + request.query_params.getlist("include"))


def _run_response(request: Request, run: dict[str, Any], ctx: RequestContext) -> JSONResponse:
    # The SDK's *_and_poll helpers wait as long as this header says between polls.
    poll = str(runtime_of(request).settings.server.poll_after_ms)
    return JSONResponse(render(run, ctx.shape), headers={"openai-poll-after-ms": poll})


@router.post("/threads/runs", response_model=None)
async def create_thread_and_run(request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    body = await json_body(request)
    include = _include(request)
    thread_body = body.pop("thread", None) or {}
    fields = dump(validate(RunFields, body))
    validate(ThreadFields, thread_body, prefix="thread.")
    run = await runs(request).create_thread_and_run(ctx.project, thread_body, fields, include)
    if fields.get("stream"):
        return event_stream(runtime_of(request), run, ctx.shape)
    return _run_response(request, run, ctx)


@router.post("/threads/{thread_id}/runs", response_model=None)
async def create_run(thread_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    fields = dump(validate(RunFields, await json_body(request)))
    run = await runs(request).create(ctx.project, thread_id, fields, _include(request))
    if fields.get("stream"):
        return event_stream(runtime_of(request), run, ctx.shape)
    return _run_response(request, run, ctx)


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    await runtime_of(request).extensions["threads"].get(ctx.project, thread_id)
    page = await list_page(runtime_of(request), page_query(request, "run", ctx.project, parent=thread_id))
    return list_body(render_list(page.items, ctx.shape), page.has_more)


@router.get("/threads/{thread_id}/runs/{run_id}", response_model=None)
async def retrieve_run(thread_id: str, run_id: str, request: Request,
                       ctx: RequestContext = Depends(request_context)) -> Response:
    return _run_response(request, await runs(request).get(ctx.project, thread_id, run_id), ctx)


@router.post("/threads/{thread_id}/runs/{run_id}", response_model=None)
async def modify_run(thread_id: str, run_id: str, request: Request,
                     ctx: RequestContext = Depends(request_context)) -> Response:
    fields = validate(ModifyMetadata, await json_body(request))
    return _run_response(request, await runs(request).modify(ctx.project, thread_id, run_id, fields.metadata), ctx)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", response_model=None)
async def cancel_run(thread_id: str, run_id: str, request: Request,
                     ctx: RequestContext = Depends(request_context)) -> Response:
    run = await runs(request).get(ctx.project, thread_id, run_id)
    engine = runtime_of(request).engine
    assert engine is not None
    return _run_response(request, await engine.cancel(ctx.project, run), ctx)


@router.post("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", response_model=None)
async def submit_tool_outputs(thread_id: str, run_id: str, request: Request,
                              ctx: RequestContext = Depends(request_context)) -> Response:
    body = validate(SubmitToolOutputs, await json_body(request))
    run = await runs(request).get(ctx.project, thread_id, run_id)
    engine = runtime_of(request).engine
    assert engine is not None
    seq = await engine.submit_tool_outputs(ctx.project, run, [o.model_dump() for o in body.tool_outputs])
    if body.stream:
        return event_stream(runtime_of(request), run, ctx.shape, after_seq=seq)
    return _run_response(request, run, ctx)


@router.get("/threads/{thread_id}/runs/{run_id}/steps")
async def list_steps(thread_id: str, run_id: str, request: Request,
                     ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    include = _include(request)
    await runs(request).get(ctx.project, thread_id, run_id)
    page = await list_page(runtime_of(request), page_query(request, "run_step", ctx.project, parent=run_id))
    return list_body(render_list([shape_step(s, include) for s in page.items], ctx.shape), page.has_more)


@router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_step(thread_id: str, run_id: str, step_id: str, request: Request,
                        ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    step = await runs(request).step(ctx.project, thread_id, run_id, step_id)
    return render(shape_step(step, _include(request)), ctx.shape)
