"""Routes: /threads and /threads/{id}/messages (with v1's message files)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from spindle.api.common import (
    json_body,
    list_body,
    list_page,
    page_query,
    paginate_items,
    request_context,
    runtime_of,
    validate,
)
from spindle.api.context import RequestContext
from spindle.api.shapes import render, render_list
from spindle.errors import NotFoundError
from spindle.ids import now
from spindle.schemas.common import ThreadFields
from spindle.schemas.runs import ModifyMetadata
from spindle.services.messages import MessageService
from spindle.services.threads import ThreadService

router = APIRouter()


def threads(request: Request) -> ThreadService:
    return runtime_of(request).extensions["threads"]  # type: ignore[no-any-return]


def messages(request: Request) -> MessageService:
    return runtime_of(request).extensions["messages"]  # type: ignore[no-any-return]


@router.post("/threads")
async def create_thread(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    body = await json_body(request)
    validate(ThreadFields, body)
    return render(await threads(request).create(ctx.project, body), ctx.shape)


@router.get("/threads")
async def list_threads(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    page = await threads(request).list_threads(ctx.project, page_query(request, "thread", ctx.project))
    return list_body(render_list(page.items, ctx.shape), page.has_more)


@router.get("/threads/{thread_id}")
async def retrieve_thread(thread_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return render(await threads(request).get(ctx.project, thread_id), ctx.shape)


@router.post("/threads/{thread_id}")
async def modify_thread(thread_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    body = await json_body(request)
    validate(ThreadFields, body)
    return render(await threads(request).modify(ctx.project, thread_id, body), ctx.shape)


@router.delete("/threads/{thread_id}")
async def delete_thread(thread_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await threads(request).delete(ctx.project, thread_id)


@router.post("/threads/{thread_id}/messages")
async def create_message(thread_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    thread = await threads(request).get(ctx.project, thread_id)
    body = await json_body(request)
    return render(await messages(request).create(ctx.project, thread, body), ctx.shape)


@router.get("/threads/{thread_id}/messages")
async def list_messages(thread_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    await threads(request).get(ctx.project, thread_id)
    run_id = request.query_params.get("run_id")
    query = page_query(request, "message", ctx.project, parent=thread_id, where={"run_id": run_id} if run_id else None)
    page = await list_page(runtime_of(request), query)
    return list_body(render_list(page.items, ctx.shape), page.has_more)


@router.get("/threads/{thread_id}/messages/{message_id}")
async def retrieve_message(thread_id: str, message_id: str, request: Request,
                           ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return render(await messages(request).get(ctx.project, thread_id, message_id), ctx.shape)


@router.post("/threads/{thread_id}/messages/{message_id}")
async def modify_message(thread_id: str, message_id: str, request: Request,
                         ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    fields = validate(ModifyMetadata, await json_body(request))
    return render(await messages(request).modify(ctx.project, thread_id, message_id, fields.metadata), ctx.shape)


@router.delete("/threads/{thread_id}/messages/{message_id}")
async def delete_message(thread_id: str, message_id: str, request: Request,
                         ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await messages(request).delete(ctx.project, thread_id, message_id)


# -- v1 message files ------------------------------------------------------------------------

def _message_file(message: dict[str, Any], file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "thread.message.file", "created_at": message.get("created_at", now()),
            "message_id": message["id"]}


@router.get("/threads/{thread_id}/messages/{message_id}/files")
async def list_message_files(thread_id: str, message_id: str, request: Request,
                             ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    message = await messages(request).get(ctx.project, thread_id, message_id)
    return paginate_items(request, [_message_file(message, a["file_id"]) for a in message.get("attachments") or []])


@router.get("/threads/{thread_id}/messages/{message_id}/files/{file_id}")
async def retrieve_message_file(thread_id: str, message_id: str, file_id: str, request: Request,
                                ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    message = await messages(request).get(ctx.project, thread_id, message_id)
    if file_id not in {a["file_id"] for a in message.get("attachments") or []}:
        raise NotFoundError(f"No file '{file_id}' is attached to message '{message_id}'.", param="file_id")
    return _message_file(message, file_id)
