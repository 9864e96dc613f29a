"""Threads: create (with messages and tool resources, atomically), list, modify, delete.

Message attachments meant for file_search land in the thread's vector store, created on
first use, as OpenAI does.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from spindle.engine.runstate import ACTIVE_MARKER_KIND
from spindle.errors import InvalidRequestError, NotFoundError
from spindle.ids import new_id, now
from spindle.runtime import Runtime
from spindle.services.messages import MessageService
from spindle.services.resources import merge_tool_resources, resolve_tool_resources, vector_stores_of
from spindle.store.base import (
    MISSING,
    CursorNotFound,
    Delete,
    DeleteChildren,
    ListQuery,
    Op,
    Page,
    Put,
    Update,
    diff_update,
    retry_on_conflict,
)


class ThreadService:
    def __init__(self, runtime: Runtime, messages: MessageService) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.messages = messages

    async def get(self, project: str, thread_id: str, param: str = "thread_id") -> dict[str, Any]:
        obj = await self.store.get("thread", thread_id, project)
        if obj is None:
            raise NotFoundError(f"No thread found with id '{thread_id}'.", param=param)
        return obj

    async def list_threads(self, project: str, query: ListQuery) -> Page:
        """One page of ``project``'s threads, in creation order. Whatever the caller's query
        says about kind, project or parent, only this project's threads are listed."""
        scoped = dataclasses.replace(query, kind="thread", project=project, parent=None, where={})
        try:
            return await self.store.page(scoped)
        except CursorNotFound as exc:
            value = scoped.after if exc.param == "after" else scoped.before
            raise InvalidRequestError(f"Invalid '{exc.param}': no thread with id '{value}' in this list.",
                                      param=exc.param, code="invalid_value") from None

    async def build(self, project: str, raw: dict[str, Any], param: str = "") -> tuple[dict[str, Any], list[Op]]:
        """Validate a thread body and return the thread plus the ops that store it and its
        messages (the caller commits them, possibly with a run, in one transaction)."""
        def p(name: str) -> str:
            return f"{param}.{name}" if param else name

        raw_messages = raw.get("messages") or []
        if not isinstance(raw_messages, list):
            raise InvalidRequestError(f"'{p('messages')}' must be an array.", param=p("messages"), code="invalid_type")
        thread_id = new_id("thread_")
        messages = [await self.messages.prepare(project, thread_id, m if isinstance(m, dict) else {},
                                                f"{p('messages')}[{i}]")
                    for i, m in enumerate(raw_messages)]
        metadata = raw.get("metadata")
        resources = await resolve_tool_resources(self.runtime, project, raw.get("tool_resources"), tools=None,
                                                 for_thread=True, param=p("tool_resources"))
        thread = {"id": thread_id, "object": "thread", "created_at": now(), "metadata": metadata or {},
                  "tool_resources": resources}
        ops = await self.attachment_ops(project, thread, messages, stored=False)
        ops.insert(0, Put("thread", thread, project))
        ops += [Put("message", m, project, parent=thread_id) for m in messages]
        return thread, ops

    async def create(self, project: str, raw: dict[str, Any]) -> dict[str, Any]:
        thread, ops = await self.build(project, raw)
        await self.store.write(ops)
        return thread

    async def attachment_ops(self, project: str, thread: dict[str, Any], messages: list[dict[str, Any]],
                             stored: bool = True) -> list[Op]:
        """Put file_search attachments into the thread's vector store (made on first use);
        ``stored=False`` for a thread not written yet (its own Put carries the change)."""
        search_files = [a["file_id"] for m in messages for a in m.get("attachments") or []
                        if any(t["type"] == "file_search" for t in a.get("tools") or [])]
        extension = vector_stores_of(self.runtime)
        if not search_files or extension is None:
            return []
        before = copy.deepcopy(thread.get("tool_resources", MISSING))
        resources = thread.setdefault("tool_resources", {})
        store_ids = (resources.get("file_search") or {}).get("vector_store_ids") or []
        if store_ids:
            await extension.add_files(project, store_ids[0], search_files)
            return []
        store_id = await extension.create_for_thread(project, search_files, None, thread_default_expiry=True)
        resources["file_search"] = {"vector_store_ids": [store_id]}
        if not stored:
            return []
        # Fails (and the caller's whole write with it) if the resources changed meanwhile.
        return [Update("thread", thread["id"], fields={"tool_resources": resources},
                       expect={"tool_resources": before})]

    async def modify(self, project: str, thread_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            before = await self.get(project, thread_id)
            thread = copy.deepcopy(before)
            if raw.get("tool_resources") is not None:
                update = await resolve_tool_resources(self.runtime, project, raw["tool_resources"], tools=None,
                                                      for_thread=True)
                thread["tool_resources"] = merge_tool_resources(thread.get("tool_resources") or {}, update)
            if raw.get("metadata") is not None:
                thread["metadata"] = raw["metadata"]
            # The merged resources were computed from what was read: they must still be that.
            await self.store.write([diff_update("thread", before, thread, cas=("tool_resources",))])
            return thread

        return await retry_on_conflict(attempt)

    async def delete(self, project: str, thread_id: str) -> dict[str, Any]:
        await self.get(project, thread_id)
        runs = await self.store.scan("run", parent=thread_id)
        ops: list[Op] = [DeleteChildren("run_step", r["id"]) for r in runs]
        ops += [DeleteChildren("run", thread_id), DeleteChildren("message", thread_id),
                DeleteChildren(ACTIVE_MARKER_KIND, thread_id), Delete("thread", thread_id)]
        if self.runtime.engine is not None:
            for run in runs:
                await self.runtime.engine.abandon(run["id"])
        await self.store.write(ops)
        for tool in self.runtime.tools.values():
            await tool.on_thread_deleted(project, thread_id)
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}
