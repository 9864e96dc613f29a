"""Conversations: a durable list of items (messages, function calls and outputs) that
responses read and extend. Items the client adds are stored one by one; a response made in
the conversation is stored as one reference to it (see ``spindle.responses.history``)."""

from __future__ import annotations

from typing import Any

from spindle.errors import NotFoundError
from spindle.ids import new_id, now
from spindle.responses import history
from spindle.responses import items as item_rules
from spindle.responses.render import replay
from spindle.runtime import Runtime
from spindle.store.base import MISSING, Conflict, Delete, DeleteChildren, Op, Put, Update


def _not_found(conversation_id: str) -> NotFoundError:
    return NotFoundError(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")


class ConversationService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store

    async def get(self, project: str, conversation_id: str) -> dict[str, Any]:
        conversation = await self.store.get("conversation", conversation_id, project)
        if conversation is None:
            raise _not_found(conversation_id)
        return conversation

    def _item_ops(self, project: str, conversation_id: str, raw: list[Any]) -> tuple[list[dict[str, Any]], list[Op]]:
        created = [item_rules.normalize_item(item, f"items[{i}]") for i, item in enumerate(raw)]
        for i, item in enumerate(created):
            if item["type"] == "item_reference":
                raise item_rules.InvalidRequestError("Item references cannot be added to a conversation.",
                                                     param=f"items[{i}].type", code="invalid_value")
        return created, [Put("conversation_item", {**item, "created_at": now()}, project, parent=conversation_id)
                         for item in created]

    async def create(self, project: str, items: list[Any] | None, metadata: dict[str, Any] | None) -> dict[str, Any]:
        conversation_id = new_id("conv_")
        conversation: dict[str, Any] = {"id": conversation_id, "object": "conversation", "created_at": now(),
                        "metadata": metadata or {}}
        _, ops = self._item_ops(project, conversation_id, items or [])
        await self.store.write([Put("conversation", conversation, project), *ops])
        return conversation

    async def update(self, project: str, conversation_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        await self.get(project, conversation_id)
        try:
            await self.store.write([Update("conversation", conversation_id, fields={"metadata": metadata or {}})])
        except Conflict:
            raise _not_found(conversation_id) from None
        return await self.get(project, conversation_id)

    async def delete(self, project: str, conversation_id: str) -> dict[str, Any]:
        await self.get(project, conversation_id)
        await self.store.write([DeleteChildren("conversation_item", conversation_id),
                                Delete("conversation", conversation_id)])
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def add_items(self, project: str, conversation_id: str, raw: list[Any]) -> list[dict[str, Any]]:
        await self.get(project, conversation_id)
        created, ops = self._item_ops(project, conversation_id, raw)
        await self.store.write(ops)
        return created

    async def items(self, project: str, conversation_id: str) -> list[dict[str, Any]]:
        """Every item, oldest first (responses expanded into their input and output)."""
        await self.get(project, conversation_id)
        return [_public(i) for i in await history.expand_conversation(self.store, project, conversation_id)]

    async def item(self, project: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        for item in await self.items(project, conversation_id):
            if item.get("id") == item_id:
                return item
        raise NotFoundError(f"Item with id '{item_id}' not found.", param="item_id")

    async def delete_item(self, project: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        conversation = await self.get(project, conversation_id)
        if await self.store.get("conversation_item", item_id, project) is not None:
            await self.store.write([Delete("conversation_item", item_id)])
            return conversation
        # An item of a response in the conversation: hidden from it, the response keeps it.
        for entry in await self.store.scan("conversation_item", {"type": history.REF_TYPE}, parent=conversation_id):
            run = await self.store.get("run", entry["response_id"], project)
            if run is None:
                continue
            output = (await replay(self.store, run)).response["output"]
            if any(i.get("id") == item_id for i in [*(run.get("_input") or []), *output]):
                await self._hide(entry, item_id)
                return conversation
        raise NotFoundError(f"Item with id '{item_id}' not found.", param="item_id")

    async def _hide(self, entry: dict[str, Any], item_id: str) -> None:
        for _ in range(8):  # compare-and-set on the list: two deletes at once both count
            hidden = list(entry.get("_deleted") or [])
            try:
                await self.store.write([Update("conversation_item", entry["id"], fields={"_deleted": [*hidden, item_id]},
                                               expect={"_deleted": entry.get("_deleted", MISSING)})])
                return
            except Conflict:
                fresh = await self.store.get("conversation_item", entry["id"], None)
                if fresh is None:
                    return
                entry = fresh
        raise RuntimeError(f"could not update conversation entry {entry['id']}")


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_") and k != "created_at"}
