"""Routes: /files (upload, list, retrieve, delete, content)."""

from __future__ import annotations

import os
import tempfile
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from spindle.api.common import list_body, list_page, page_query, request_context, runtime_of
from spindle.api.context import RequestContext
from spindle.errors import InvalidRequestError, PayloadTooLargeError
from spindle.services.files import FileService, content_type_for

router = APIRouter()


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"File too large: the maximum file size is {limit // (1024 * 1024)} MB.", param="file", code="file_too_large"
    )


@router.post("/files")
async def upload_file(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    runtime = runtime_of(request)
    limit = runtime.settings.server.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError("Uploads must be sent as multipart/form-data with 'file' and 'purpose'.",
                                  param="file")
    form = await request.form(max_files=1, max_fields=20)
    try:
        purpose = FileService.check_purpose(str(form.get("purpose") or ""))
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("Missing required parameter: 'file'.", param="file",
                                      code="missing_required_parameter")
        filename = os.path.basename(upload.filename or "upload")
        staged, size = await _stage(upload, runtime.blobs.staging_dir(), limit)
        try:
            return await runtime.files.create_from_staged(ctx.project, filename=filename, staged=staged, size=size,
                                                          purpose=purpose)
        finally:
            staged.unlink(missing_ok=True)
    finally:
        await form.close()


async def _stage(upload: UploadFile, staging: Any, limit: int) -> tuple[Any, int]:
    """Copy the upload into the blob store's staging dir, counting bytes; over the limit,
    nothing is kept and the client gets 413."""
    fd, name = tempfile.mkstemp(dir=staging, suffix=".upload")
    from pathlib import Path

    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size


@router.get("/files")
async def list_files(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    runtime = runtime_of(request)
    purpose = request.query_params.get("purpose")
    query = page_query(request, "file", ctx.project, where={"purpose": purpose} if purpose else None)
    if "limit" not in request.query_params:
        query.limit = 100  # the files list has no small default page on OpenAI's side
    page = await list_page(runtime, query)
    return list_body(page.items, page.has_more)


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await runtime_of(request).files.get(ctx.project, file_id)


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await runtime_of(request).files.delete(ctx.project, file_id)


def _disposition(filename: str) -> str:
    """RFC 6266/5987: an ASCII fallback plus the exact UTF-8 name; quotes and line breaks in a
    client-chosen name can never break out of the header."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> StreamingResponse:
    runtime = runtime_of(request)
    obj = await runtime.files.get(ctx.project, file_id)
    return StreamingResponse(
        runtime.blobs.stream(file_id),
        media_type=content_type_for(obj["filename"]),
        headers={"content-length": str(obj["bytes"]), "content-disposition": _disposition(obj["filename"])},
    )
