"""A response executed by the run engine: the same ``Execution`` with three differences.

- It has a thread of its own (hidden; it holds the messages the engine writes) and no
  assistant: the request carries model, instructions and tools.
- The conversation before it is not thread messages but items: the chain of
  ``previous_response_id`` (each response's input, then its output) or the ``conversation``,
  then this response's own input (``spindle.responses.history``).
- Function calls do not pause it (there is no ``requires_action`` in the Responses API): the
  response completes with its ``function_call`` items, and the client answers them in the
  next response's input.
"""

from __future__ import annotations

import json
from typing import Any

from spindle.engine import objects
from spindle.engine.events import event
from spindle.engine.execution import Execution
from spindle.responses import containers, history
from spindle.responses.render import BUILTIN_DONE
from spindle.store.base import AppendEvent


class ResponseExecution(Execution):
    async def _load(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        thread = await self.store.get("thread", self.run["thread_id"], self.project)
        # The request's file_search tool names its stores; the engine's tool reads them here.
        store_ids = [i for t in (self.run.get("_response") or {}).get("tools") or [] if t.get("type") == "file_search"
                     for i in t.get("vector_store_ids") or []]
        resources = {"file_search": {"vector_store_ids": store_ids}} if store_ids else {}
        assistant = {"id": None, "object": "assistant", "model": self.run["model"], "tools": self.run["tools"],
                     "tool_resources": resources, "instructions": ""}
        container_id = (self.run.get("_response") or {}).get("container_id")
        if container_id:
            await containers.fill(self.runtime, self.project, container_id)
        return thread, assistant

    async def _run_builtin(self, step: dict[str, Any], call: Any, builtin: Any) -> None:
        """As for runs, then one more log event with what the Responses item shows and the
        Assistants step does not (a file search's queries): ``spindle.builtin_call.done``."""
        assert self.ctx is not None
        limit = (self.run.get("_response") or {}).get("max_tool_calls")
        if limit is not None and _builtin_calls(self.ctx.completed_calls) >= limit:
            await self._refuse_builtin(step, call)  # a parallel call beyond max_tool_calls
            return
        await super()._run_builtin(step, call, builtin)
        if limit is not None and _builtin_calls(self.ctx.completed_calls) >= limit:
            # The limit is reached: the next turns offer the functions only.
            self.ctx.tools = [t for t in self.ctx.tools if t.get("type") == "function"]
        final = next(c for c in step["step_details"]["tool_calls"] if c["id"] == call.id)
        data: dict[str, Any] = {"id": call.id, "type": final["type"]}
        if final["type"] == "code_interpreter":
            data.update(await containers.call_item(self.runtime, self.project, self.run, final))
        if final["type"] == "file_search":
            data["queries"] = file_search_queries(call.arguments)
            data["results"] = [{"file_id": r["file_id"], "filename": r.get("file_name") or "", "score": r.get("score"),
                                "text": "".join(p.get("text") or "" for p in r.get("content") or []),
                                "attributes": {}} for r in final["file_search"].get("results") or []]
        await self.write([AppendEvent(self.run["id"], BUILTIN_DONE, data)])

    async def _history(self, thread_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = await history.context_items(self.store, self.project, self.run)
        return history.chat_messages(items)

    async def _require_action(self, step: dict[str, Any], calls: list[Any]) -> None:
        for item in step["step_details"]["tool_calls"]:
            if item["type"] == "function":
                item["function"]["arguments"] = next((c.arguments for c in calls if c.id == item["id"]),
                                                     item["function"].get("arguments") or "")
        objects.finish_step(step, "completed")
        await self.set_status("completed", [self.put_step(step), event("thread.run.step.completed", step)], done=True)

    async def _refuse_builtin(self, step: dict[str, Any], call: Any) -> None:
        index = next(i for i, c in enumerate(step["step_details"]["tool_calls"]) if c["id"] == call.id)
        entry = step["step_details"]["tool_calls"][index]
        entry.update(_arguments=call.arguments, _output="Error: the limit of built-in tool calls for this response "
                                                        "(max_tool_calls) is reached; answer without it.")
        await self.write([self.put_step(step), AppendEvent(self.run["id"], BUILTIN_DONE, {
            "id": call.id, "type": entry["type"], "status": "incomplete",
            "queries": file_search_queries(call.arguments), "results": []})])


def _builtin_calls(calls: list[dict[str, Any]]) -> int:
    return sum(1 for c in calls if c.get("type") != "function")


def file_search_queries(arguments: str) -> list[str]:
    """The queries of a file_search call as the model wrote them (bounded, strings only)."""
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return []
    raw = args.get("queries", args.get("query")) if isinstance(args, dict) else None
    raw = [raw] if isinstance(raw, str) else raw
    return [q[:2000] for q in raw if isinstance(q, str)][:8] if isinstance(raw, list) else []
