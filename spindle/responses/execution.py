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

from typing import Any

from spindle.engine import objects
from spindle.engine.events import event
from spindle.engine.execution import Execution
from spindle.responses import history


class ResponseExecution(Execution):
    async def _load(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        thread = await self.store.get("thread", self.run["thread_id"], self.project)
        assistant = {"id": None, "object": "assistant", "model": self.run["model"], "tools": self.run["tools"],
                     "tool_resources": self.run.get("tool_resources") or {}, "instructions": ""}
        return thread, assistant

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
