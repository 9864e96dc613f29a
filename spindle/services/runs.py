"""Runs: checking a run request and creating it (with its first events) atomically."""

from __future__ import annotations

from typing import Any

from spindle.engine import objects, runstate
from spindle.engine.events import event
from spindle.errors import ConflictingRunError, InvalidRequestError, NotFoundError
from spindle.runtime import Runtime
from spindle.services.assistants import AssistantService
from spindle.services.messages import MessageService
from spindle.services.threads import ThreadService
from spindle.store.base import AppendEvent, Conflict, Delete, Op, Put, Update

INCLUDE_VALUES = ("step_details.tool_calls[*].file_search.results[*].content",)


def check_include(values: list[str]) -> list[str]:
    for value in values:
        if value not in INCLUDE_VALUES:
            raise InvalidRequestError(f"Invalid value for 'include[]': '{value}'. Supported: {list(INCLUDE_VALUES)}.",
                                      param="include", code="invalid_value")
    return values


class RunService:
    def __init__(self, runtime: Runtime, assistants: AssistantService, threads: ThreadService,
                 messages: MessageService) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.assistants = assistants
        self.threads = threads
        self.messages = messages

    async def get(self, project: str, thread_id: str, run_id: str) -> dict[str, Any]:
        run = await self.store.get("run", run_id, project)
        if run is None or run["thread_id"] != thread_id:
            raise NotFoundError(f"No run found with id '{run_id}'.", param="run_id")
        return run

    def _check_tool_choice(self, fields: dict[str, Any], tools: list[dict[str, Any]]) -> None:
        choice = fields.get("tool_choice")
        if not isinstance(choice, dict):
            return
        kind = "file_search" if choice["type"] == "retrieval" else choice["type"]
        fields["tool_choice"] = {**choice, "type": kind}
        if kind == "function":
            name = (choice.get("function") or {}).get("name")
            if not name:
                raise InvalidRequestError("tool_choice of type 'function' needs 'function.name'.",
                                          param="tool_choice.function.name", code="missing_required_parameter")
            if not any(t.get("type") == "function" and t["function"]["name"] == name for t in tools):
                raise InvalidRequestError(f"tool_choice names function '{name}', which is not among the run's tools.",
                                          param="tool_choice", code="invalid_value")
        elif not any(t.get("type") == kind for t in tools):
            raise InvalidRequestError(f"tool_choice requires the '{kind}' tool, which is not among the run's tools.",
                                      param="tool_choice", code="invalid_value")

    async def _build(self, project: str, thread_id: str, fields: dict[str, Any],
                     include: list[str]) -> tuple[dict[str, Any], list[Op]]:
        assistant = await self.assistants.get(project, fields["assistant_id"], param="assistant_id")
        tools = fields["tools"] if fields.get("tools") is not None else assistant.get("tools") or []
        self._check_tool_choice(fields, tools)
        ops: list[Op] = []
        for i, raw in enumerate(fields.get("additional_messages") or []):
            message = await self.messages.prepare(project, thread_id, raw if isinstance(raw, dict) else {},
                                                  f"additional_messages[{i}]")
            ops.append(Put("message", message, project, parent=thread_id))
        run = objects.new_run(thread_id=thread_id, assistant=assistant, fields={**fields, "_include": include})
        ops += [Put("run", run, project, parent=thread_id), event("thread.run.created", run),
                event("thread.run.queued", run)]
        return run, ops

    async def create(self, project: str, thread_id: str, fields: dict[str, Any], include: list[str]) -> dict[str, Any]:
        thread = await self.threads.get(project, thread_id)
        run, ops = await self._build(project, thread_id, fields, include)
        if fields.get("additional_messages"):
            messages = [op.obj for op in ops if isinstance(op, Put) and op.kind == "message"]
            ops = [*await self.threads.attachment_ops(project, thread, messages), *ops]
        # One active run per thread: the store refuses a second claim of the thread.
        ops = [runstate.claim_thread(run, project), *ops]
        for attempt in range(2):
            try:
                await self.store.write(ops)
                break
            except Conflict as exc:
                if exc.kind != runstate.ACTIVE_MARKER_KIND or attempt == 1 or not await self._clear_stale(thread_id):
                    active = await self.messages.active_run(thread_id)
                    active_id = active["id"] if active else "(finishing)"
                    raise ConflictingRunError(f"Thread {thread_id} already has an active run {active_id}.",
                                              param="thread_id") from None
        self._launch(run, project)
        return run

    async def _clear_stale(self, thread_id: str) -> bool:
        """A thread marked busy by a run that is over (e.g. a database from before the marker,
        or a run deleted by hand) is freed; True when the marker was stale."""
        marker = await self.store.get(runstate.ACTIVE_MARKER_KIND, runstate.marker_id(thread_id), None)
        if marker is None:
            return True
        holder = await self.store.get("run", marker["run_id"], None)
        if holder is not None and holder["status"] in objects.ACTIVE_RUN_STATUSES:
            return False
        await self.store.write([Delete(runstate.ACTIVE_MARKER_KIND, marker["id"], when={"run_id": marker["run_id"]})])
        return True

    async def create_thread_and_run(self, project: str, thread_body: dict[str, Any], fields: dict[str, Any],
                                    include: list[str]) -> dict[str, Any]:
        if fields.get("tool_resources") is not None and not thread_body.get("tool_resources"):
            # The top-level tool_resources of create-thread-and-run equip the new thread.
            thread_body = {**thread_body, "tool_resources": fields["tool_resources"]}
        thread, thread_ops = await self.threads.build(project, thread_body, param="thread")
        run, run_ops = await self._build(project, thread["id"], fields, include)
        announce = AppendEvent(run["id"], "thread.created", {k: v for k, v in thread.items() if not k.startswith("_")})
        await self.store.write([*thread_ops, runstate.claim_thread(run, project), *run_ops[:-2], announce,
                                *run_ops[-2:]])
        self._launch(run, project)
        return run

    def _launch(self, run: dict[str, Any], project: str) -> None:
        assert self.runtime.engine is not None
        self.runtime.engine.launch(run, project)

    async def modify(self, project: str, thread_id: str, run_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        run = await self.get(project, thread_id, run_id)
        if metadata is None:
            return run
        # Only the field the client changes: the engine may be writing the rest right now.
        try:
            await self.store.write([Update("run", run_id, fields={"metadata": metadata})])
        except Conflict:  # deleted meanwhile
            raise NotFoundError(f"No run found with id '{run_id}'.", param="run_id") from None
        return await self.get(project, thread_id, run_id)

    async def step(self, project: str, thread_id: str, run_id: str, step_id: str) -> dict[str, Any]:
        await self.get(project, thread_id, run_id)
        step = await self.store.get("run_step", step_id, project)
        if step is None or step["run_id"] != run_id:
            raise NotFoundError(f"No run step found with id '{step_id}'.", param="step_id")
        return step


def shape_step(step: dict[str, Any], include: list[str]) -> dict[str, Any]:
    """File search result content is only shown when ``include[]`` asks for it."""
    if INCLUDE_VALUES[0] in include or step["step_details"]["type"] != "tool_calls":
        return step
    calls = []
    for call in step["step_details"]["tool_calls"]:
        if call.get("type") == "file_search" and (call.get("file_search") or {}).get("results"):
            results = [{k: v for k, v in r.items() if k != "content"} for r in call["file_search"]["results"]]
            call = {**call, "file_search": {**call["file_search"], "results": results}}
        calls.append(call)
    return {**step, "step_details": {**step["step_details"], "tool_calls": calls}}
