"""Routes: the Containers API (``/v1/containers`` and their files)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

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
from spindle.containers.service import ContainerService, shown, shown_file
from spindle.errors import InvalidRequestError, PayloadTooLargeError
from spindle.schemas.containers import ContainerCreate, ContainerFileCreate

router = APIRouter()


def containers(request: Request) -> ContainerService:
    return runtime_of(request).extensions["containers"]  # type: ignore[no-any-return]


@router.post("/containers")
async def create_container(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    body = validate(ContainerCreate, await json_body(request))
    minutes = body.expires_after.minutes if body.expires_after else None
    policy = body.network_policy.model_dump(exclude_none=True) if body.network_policy else None
    return shown(await containers(request).create(ctx.project, body.name, body.file_ids or [], minutes,
                                                  body.memory_limit, policy))


@router.get("/containers")
async def list_containers(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    page = await list_page(runtime_of(request), page_query(request, "container", ctx.project))
    return list_body([shown(r) for r in page.items], page.has_more)


@router.get("/containers/{container_id}")
async def retrieve_container(container_id: str, request: Request,
                             ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return shown(await containers(request).get(ctx.project, container_id))


@router.delete("/containers/{container_id}")
async def delete_container(container_id: str, request: Request,
                           ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await containers(request).delete(ctx.project, container_id)


@router.post("/containers/{container_id}/files")
async def create_container_file(container_id: str, request: Request,
                                ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    service = containers(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = validate(ContainerFileCreate, await json_body(request))
        return shown_file(await service.add_file(ctx.project, container_id, file_id=body.file_id))
    limit = runtime_of(request).settings.server.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLargeError("File too large.", param="file", code="file_too_large")
    form = await request.form(max_files=1, max_fields=20)
    try:
        upload = form.get("file")
        file_id = form.get("file_id")
        if isinstance(file_id, str) and file_id:
            return shown_file(await service.add_file(ctx.project, container_id, file_id=file_id))
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("Send a 'file' (multipart) or a 'file_id'.", param="file",
                                      code="missing_required_parameter")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLargeError("File too large.", param="file", code="file_too_large")
        filename = os.path.basename(upload.filename or "upload")
        return shown_file(await service.add_file(ctx.project, container_id, filename=filename, data=data))
    finally:
        await form.close()


@router.get("/containers/{container_id}/files")
async def list_container_files(container_id: str, request: Request,
                               ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    rows = await containers(request).files(ctx.project, container_id)
    return paginate_items(request, [shown_file(r) for r in rows])


@router.get("/containers/{container_id}/files/{file_id}")
async def retrieve_container_file(container_id: str, file_id: str, request: Request,
                                  ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return shown_file(await containers(request).file(ctx.project, container_id, file_id))


@router.get("/containers/{container_id}/files/{file_id}/content")
async def container_file_content(container_id: str, file_id: str, request: Request,
                                 ctx: RequestContext = Depends(request_context)) -> StreamingResponse:
    _row, chunks = await containers(request).content(ctx.project, container_id, file_id)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.delete("/containers/{container_id}/files/{file_id}")
async def delete_container_file(container_id: str, file_id: str, request: Request,
                                ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await containers(request).delete_file(ctx.project, container_id, file_id)
