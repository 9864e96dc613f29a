"""Assistants: create, read, modify, delete, and v1's assistant files."""

from __future__ import annotations

import copy
from typing import Any

from spindle.errors import InvalidRequestError, NotFoundError
from spindle.ids import new_id, now
from spindle.runtime import Runtime
from spindle.services.resources import merge_tool_resources, resolve_tool_resources
from spindle.store.base import Delete, Put, diff_update, retry_on_conflict

_COPIED = ("name", "description", "instructions", "temperature", "top_p", "response_format", "reasoning_effort")


class AssistantService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store

    async def get(self, project: str, assistant_id: str, param: str = "assistant_id") -> dict[str, Any]:
        obj = await self.store.get("assistant", assistant_id, project)
        if obj is None:
            raise NotFoundError(f"No assistant found with id '{assistant_id}'.", param=param)
        return obj

    async def create(self, project: str, fields: dict[str, Any]) -> dict[str, Any]:
        if not fields.get("model"):
            raise InvalidRequestError("Missing required parameter: 'model'.", param="model",
                                      code="missing_required_parameter")
        tools = fields.get("tools") or []
        v1_files = fields.get("file_ids")
        resources = await resolve_tool_resources(self.runtime, project, fields.get("tool_resources"), tools=tools,
                                                 v1_file_ids=v1_files, for_thread=False)
        obj: dict[str, Any] = {
            "id": new_id("asst_"), "object": "assistant", "created_at": now(),
            "name": None, "description": None, "model": fields["model"], "instructions": None,
            "tools": tools, "tool_resources": resources, "metadata": fields.get("metadata") or {},
            "top_p": 1.0, "temperature": 1.0, "response_format": "auto",
        }
        for key in _COPIED:
            if fields.get(key) is not None:
                obj[key] = fields[key]
        obj["_file_ids"] = list(v1_files or [])
        await self.store.write([Put("assistant", obj, project)])
        return obj

    async def modify(self, project: str, assistant_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return await retry_on_conflict(lambda: self._modify_once(project, assistant_id, fields))

    async def _modify_once(self, project: str, assistant_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        before = await self.get(project, assistant_id)
        obj = copy.deepcopy(before)
        tools = fields["tools"] if fields.get("tools") is not None else obj["tools"]
        if "tool_resources" in fields or "file_ids" in fields:
            update = await resolve_tool_resources(self.runtime, project, fields.get("tool_resources"), tools=tools,
                                                  v1_file_ids=fields.get("file_ids"), for_thread=False)
            obj["tool_resources"] = merge_tool_resources(obj["tool_resources"], update)
            if fields.get("file_ids") is not None:
                obj["_file_ids"] = list(fields["file_ids"])
        obj["tools"] = tools
        if fields.get("model"):
            obj["model"] = fields["model"]
        if fields.get("metadata") is not None:
            obj["metadata"] = fields["metadata"]
        for key in _COPIED:
            if key in fields:
                obj[key] = fields[key]
        # Only what changed; resources merged from what was read must still be that.
        await self.store.write([diff_update("assistant", before, obj, cas=("tool_resources", "_file_ids"))])
        return obj

    async def delete(self, project: str, assistant_id: str) -> dict[str, Any]:
        await self.get(project, assistant_id)
        await self.store.write([Delete("assistant", assistant_id)])
        return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}

    # -- v1: /assistants/{id}/files --------------------------------------------------------

    async def attach_file(self, project: str, assistant_id: str, file_id: str) -> dict[str, Any]:
        obj = await self.get(project, assistant_id)
        await self.runtime.files.require_all(project, [file_id], "file_id")
        files = list(obj.get("_file_ids") or [])
        if file_id not in files:
            files.append(file_id)
        await self.modify(project, assistant_id, {"file_ids": files})
        return assistant_file(assistant_id, file_id)

    async def detach_file(self, project: str, assistant_id: str, file_id: str) -> dict[str, Any]:
        obj = await self.get(project, assistant_id)
        files = list(obj.get("_file_ids") or [])
        if file_id not in files:
            raise NotFoundError(f"No file '{file_id}' is attached to assistant '{assistant_id}'.", param="file_id")
        files.remove(file_id)
        ci = dict(obj["tool_resources"].get("code_interpreter") or {"file_ids": []})
        ci["file_ids"] = [f for f in ci.get("file_ids", []) if f != file_id]
        changed = {**obj, "tool_resources": {**obj["tool_resources"], "code_interpreter": ci}, "_file_ids": files}
        await self.store.write([diff_update("assistant", obj, changed, cas=("tool_resources", "_file_ids"))])
        return {"id": file_id, "object": "assistant.file.deleted", "deleted": True}


def assistant_file(assistant_id: str, file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "assistant.file", "created_at": now(), "assistant_id": assistant_id}
