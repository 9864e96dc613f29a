"""Routes: /assistants, and v1's /assistants/{id}/files."""

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
from spindle.schemas.common import AssistantFields, dump
from spindle.services.assistants import AssistantService, assistant_file

router = APIRouter()


def service(request: Request) -> AssistantService:
    return runtime_of(request).extensions["assistants"]  # type: ignore[no-any-return]


@router.post("/assistants")
async def create_assistant(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    fields = dump(validate(AssistantFields, await json_body(request)))
    return render(await service(request).create(ctx.project, fields), ctx.shape)


@router.get("/assistants")
async def list_assistants(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    page = await list_page(runtime_of(request), page_query(request, "assistant", ctx.project))
    return list_body(render_list(page.items, ctx.shape), page.has_more)


@router.get("/assistants/{assistant_id}")
async def retrieve_assistant(assistant_id: str, request: Request,
                             ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return render(await service(request).get(ctx.project, assistant_id), ctx.shape)


@router.post("/assistants/{assistant_id}")
async def modify_assistant(assistant_id: str, request: Request,
                           ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    fields = dump(validate(AssistantFields, await json_body(request)))
    return render(await service(request).modify(ctx.project, assistant_id, fields), ctx.shape)


@router.delete("/assistants/{assistant_id}")
async def delete_assistant(assistant_id: str, request: Request,
                           ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await service(request).delete(ctx.project, assistant_id)


# -- v1 assistant files ----------------------------------------------------------------------

@router.post("/assistants/{assistant_id}/files")
async def create_assistant_file(assistant_id: str, request: Request,
                                ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    body = await json_body(request)
    from spindle.errors import InvalidRequestError

    if not isinstance(body.get("file_id"), str):
        raise InvalidRequestError("Missing required parameter: 'file_id'.", param="file_id",
                                  code="missing_required_parameter")
    return await service(request).attach_file(ctx.project, assistant_id, body["file_id"])


@router.get("/assistants/{assistant_id}/files")
async def list_assistant_files(assistant_id: str, request: Request,
                               ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    assistant = await service(request).get(ctx.project, assistant_id)
    return paginate_items(request, [assistant_file(assistant_id, f) for f in assistant.get("_file_ids") or []])


@router.get("/assistants/{assistant_id}/files/{file_id}")
async def retrieve_assistant_file(assistant_id: str, file_id: str, request: Request,
                                  ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    assistant = await service(request).get(ctx.project, assistant_id)
    if file_id not in (assistant.get("_file_ids") or []):
        from spindle.errors import NotFoundError

        raise NotFoundError(f"No file '{file_id}' is attached to assistant '{assistant_id}'.", param="file_id")
    return assistant_file(assistant_id, file_id)


@router.delete("/assistants/{assistant_id}/files/{file_id}")
async def delete_assistant_file(assistant_id: str, file_id: str, request: Request,
                                ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await service(request).detach_file(ctx.project, assistant_id, file_id)
