"""Routes: /vector_stores, their files, file batches and search (``router``).

Thin: parse, call ``VectorStoreService``, shape the response. Both ``client.beta.vector_stores``
(SDK ≤ 1.65) and ``client.vector_stores`` call these same paths. Retrieve (and create)
responses carry ``openai-poll-after-ms``, which the SDK's ``*_and_poll`` helpers obey.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

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
from spindle.errors import InvalidRequestError
from spindle.store.base import ListQuery
from spindle.vector_stores import objects as obj_
from spindle.vector_stores.requests import (
    CreateFile,
    CreateStore,
    ModifyStore,
    UpdateFile,
    batch_entries,
    chunking,
)
from spindle.vector_stores.service import VectorStoreService

router = APIRouter()


def _service(request: Request) -> VectorStoreService:
    runtime = runtime_of(request)
    service = runtime.extensions.get("vector_stores")
    if service is None:
        problem = runtime.extensions.get("vector_stores_problem", "it is not installed")
        raise InvalidRequestError(f"File search is not available on this server: {problem}")
    return service  # type: ignore[no-any-return]


def _polled(request: Request, body: dict[str, Any]) -> JSONResponse:
    poll = str(runtime_of(request).settings.server.poll_after_ms)
    return JSONResponse(body, headers={"openai-poll-after-ms": poll})


def _file_query(request: Request, ctx: RequestContext, store_id: str, where: dict[str, Any]) -> ListQuery:
    status = request.query_params.get("filter")
    if status is not None:
        if status not in obj_.LIST_FILTERS:
            raise InvalidRequestError(f"Invalid 'filter': '{status}'; expected one of {list(obj_.LIST_FILTERS)}.",
                                      param="filter", code="invalid_value")
        where = {**where, "status": status}
    query = page_query(request, "vector_store_file", ctx.project, parent=store_id, where=where)
    # cursors name files by their public id; stored ids are "<store>:<file>"
    query.after = obj_.stored_file_id(store_id, query.after) if query.after else None
    query.before = obj_.stored_file_id(store_id, query.before) if query.before else None
    return query


async def _file_page(request: Request, query: ListQuery) -> dict[str, Any]:
    page = await list_page(runtime_of(request), query)
    return list_body([obj_.render_file(item) for item in page.items], page.has_more)


# -- stores --------------------------------------------------------------------------------
@router.post("/vector_stores")
async def create_store(request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    body = validate(CreateStore, await json_body(request))
    expires = body.expires_after.model_dump(include={"anchor", "days"}) if body.expires_after else None
    vs = await _service(request).create_store(
        ctx.project, name=body.name, file_ids=body.file_ids or [], metadata=body.metadata, expires_after=expires,
        chunking_strategy=body.chunking_strategy)
    return _polled(request, obj_.render_store(vs))


@router.get("/vector_stores")
async def list_stores(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    _service(request)
    page = await list_page(runtime_of(request), page_query(request, "vector_store", ctx.project))
    return list_body([obj_.render_store(vs) for vs in page.items], page.has_more)


@router.get("/vector_stores/{store_id}")
async def retrieve_store(store_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return _polled(request, obj_.render_store(await _service(request).get_store(ctx.project, store_id)))


@router.post("/vector_stores/{store_id}")
async def modify_store(store_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    raw = await json_body(request)
    body = validate(ModifyStore, raw)
    changes: dict[str, Any] = {"name": body.name, "metadata": body.metadata}
    if "expires_after" in raw:
        changes["expires_after"] = body.expires_after.model_dump(include={"anchor", "days"}) if body.expires_after else None
    return obj_.render_store(await _service(request).modify_store(ctx.project, store_id, changes))


@router.delete("/vector_stores/{store_id}")
async def delete_store(store_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await _service(request).delete_store(ctx.project, store_id)


@router.post("/vector_stores/{store_id}/search")
async def search_store(store_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await _service(request).search.api_search(ctx.project, store_id, await json_body(request))


# -- files ---------------------------------------------------------------------------------
@router.post("/vector_stores/{store_id}/files")
async def create_file(store_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    body = validate(CreateFile, await json_body(request))
    entry = (body.file_id, body.attributes, chunking(body.chunking_strategy))
    item = await _service(request).add_entries(ctx.project, store_id, [entry], param="file_id", batch=False)
    return _polled(request, obj_.render_file(item))


@router.get("/vector_stores/{store_id}/files")
async def list_files(store_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    await _service(request).get_store(ctx.project, store_id)
    return await _file_page(request, _file_query(request, ctx, store_id, {}))


@router.get("/vector_stores/{store_id}/files/{file_id}")
async def retrieve_file(store_id: str, file_id: str, request: Request,
                        ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    item = await _service(request).get_file(ctx.project, store_id, file_id)
    return _polled(request, obj_.render_file(item))


@router.post("/vector_stores/{store_id}/files/{file_id}")
async def update_file(store_id: str, file_id: str, request: Request,
                      ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    body = validate(UpdateFile, await json_body(request))
    item = await _service(request).update_file(ctx.project, store_id, file_id, body.attributes or {})
    return obj_.render_file(item)


@router.delete("/vector_stores/{store_id}/files/{file_id}")
async def delete_file(store_id: str, file_id: str, request: Request,
                      ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await _service(request).delete_file(ctx.project, store_id, file_id)


@router.get("/vector_stores/{store_id}/files/{file_id}/content")
async def file_content(store_id: str, file_id: str, request: Request,
                       ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    text = await _service(request).file_content(ctx.project, store_id, file_id)
    return {"object": "vector_store.file_content.page", "data": [{"type": "text", "text": text}] if text else [],
            "has_more": False, "next_page": None}


# -- batches -------------------------------------------------------------------------------
@router.post("/vector_stores/{store_id}/file_batches")
async def create_batch(store_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    raw = await json_body(request)
    entries = batch_entries(raw)
    param = "file_ids" if "file_ids" in raw else "files"
    batch = await _service(request).add_entries(ctx.project, store_id, entries, param=param, batch=True)
    return _polled(request, obj_.render_batch(batch))


@router.get("/vector_stores/{store_id}/file_batches/{batch_id}")
async def retrieve_batch(store_id: str, batch_id: str, request: Request,
                         ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    batch = await _service(request).get_batch(ctx.project, store_id, batch_id)
    return _polled(request, obj_.render_batch(batch))


@router.post("/vector_stores/{store_id}/file_batches/{batch_id}/cancel")
async def cancel_batch(store_id: str, batch_id: str, request: Request,
                       ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return obj_.render_batch(await _service(request).cancel_batch(ctx.project, store_id, batch_id))


@router.get("/vector_stores/{store_id}/file_batches/{batch_id}/files")
async def list_batch_files(store_id: str, batch_id: str, request: Request,
                           ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    await _service(request).get_batch(ctx.project, store_id, batch_id)
    return await _file_page(request, _file_query(request, ctx, store_id, {"_batch_id": batch_id}))
