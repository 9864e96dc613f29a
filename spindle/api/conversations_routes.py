"""Routes: the Conversations API (``/v1/conversations`` and their items)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from spindle.api.common import json_body, paginate_items, request_context, runtime_of, validate
from spindle.api.context import RequestContext
from spindle.responses.conversations import ConversationService
from spindle.schemas.responses import ConversationFields, ConversationUpdate, ItemsCreate

router = APIRouter()


def conversations(request: Request) -> ConversationService:
    return runtime_of(request).extensions["conversations"]  # type: ignore[no-any-return]


def _shown(conversation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in conversation.items() if not k.startswith("_")}


@router.post("/conversations")
async def create_conversation(request: Request, ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    body = validate(ConversationFields, await json_body(request))
    return _shown(await conversations(request).create(ctx.project, body.items, body.metadata))


@router.get("/conversations/{conversation_id}")
async def retrieve_conversation(conversation_id: str, request: Request,
                                ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return _shown(await conversations(request).get(ctx.project, conversation_id))


@router.post("/conversations/{conversation_id}")
async def update_conversation(conversation_id: str, request: Request,
                              ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    body = validate(ConversationUpdate, await json_body(request))
    return _shown(await conversations(request).update(ctx.project, conversation_id, body.metadata))


@router.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, request: Request,
                              ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await conversations(request).delete(ctx.project, conversation_id)


@router.post("/conversations/{conversation_id}/items")
async def create_items(conversation_id: str, request: Request,
                       ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    body = validate(ItemsCreate, await json_body(request))
    created = await conversations(request).add_items(ctx.project, conversation_id, body.items)
    return {"object": "list", "data": created, "first_id": created[0]["id"], "last_id": created[-1]["id"],
            "has_more": False}


@router.get("/conversations/{conversation_id}/items")
async def list_items(conversation_id: str, request: Request,
                     ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return paginate_items(request, await conversations(request).items(ctx.project, conversation_id))


@router.get("/conversations/{conversation_id}/items/{item_id}")
async def retrieve_item(conversation_id: str, item_id: str, request: Request,
                        ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return await conversations(request).item(ctx.project, conversation_id, item_id)


@router.delete("/conversations/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, request: Request,
                      ctx: RequestContext = Depends(request_context)) -> dict[str, Any]:
    return _shown(await conversations(request).delete_item(ctx.project, conversation_id, item_id))
