"""Responses: checking a request, creating the response (a run of kind ``response``, with its
hidden thread and first events) in one write, and reading it back through the renderer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from spindle.containers.service import is_expired
from spindle.engine import leases, objects
from spindle.engine.events import event
from spindle.engine.prompt import estimate_tokens
from spindle.errors import InvalidRequestError, NotFoundError
from spindle.ids import new_id, now
from spindle.responses import history
from spindle.responses import items as item_rules
from spindle.responses.ephemeral import EphemeralResponses
from spindle.responses.render import ResponseRenderer, rendered, replay
from spindle.retrieval import filters as filter_rules
from spindle.runtime import Runtime
from spindle.store.base import Delete, DeleteChildren, Op, Put

KIND = "response"
# After a cancel of a response this process executes, how long to wait for the status to settle.
_CANCEL_SETTLE_S = 5.0


def _not_found(response_id: str, param: str = "response_id") -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param=param)


def _run_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses' flat tools as the engine's (Assistants-shaped) tools; a file_search tool's
    vector stores become the response's tool_resources (``ResponseExecution._load``)."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        if tool["type"] == "code_interpreter":  # its container: ``_response.container_id``
            out.append({"type": "code_interpreter"})
            continue
        if tool["type"] == "file_search":
            options = {k: tool[k] for k in ("max_num_results", "ranking_options", "filters") if tool.get(k) is not None}
            out.append({"type": "file_search", "file_search": options})
            continue
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _shown_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the response object shows it (OpenAI's defaults filled in)."""
    if tool["type"] == "code_interpreter":
        container = tool["container"]
        return {"type": "code_interpreter", "container": container if isinstance(container, str) else
                {"type": "auto", "file_ids": container.get("file_ids") or [], **(
                    {"memory_limit": container["memory_limit"]} if container.get("memory_limit") else {})}}
    if tool["type"] == "file_search":
        return {"type": "file_search", "vector_store_ids": tool["vector_store_ids"], "filters": tool.get("filters"),
                "max_num_results": tool.get("max_num_results") or 20,
                "ranking_options": {"ranker": "auto", "score_threshold": 0.0, **(tool.get("ranking_options") or {})}}
    return {**tool, "strict": tool.get("strict", True)}


def _run_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _response_format(text: dict[str, Any] | None) -> Any:
    fmt = (text or {}).get("format") or {"type": "text"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "description", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": {**schema, "schema": fmt["schema"]}}
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    return "auto"


class ResponseService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.ephemeral = EphemeralResponses(runtime, self.purge)

    # -- reading ---------------------------------------------------------------------------

    async def run_of(self, project: str, response_id: str, param: str = "response_id") -> dict[str, Any]:
        run = await self.store.get("run", response_id, project)
        # store=false: never visible, also in the moment before its purge (or after a crash
        # prevented it, when the row is left behind failed).
        if run is None or run.get("_kind") != KIND or (run.get("_response") or {}).get("store") is False:
            raise _not_found(response_id, param)
        return run

    async def get(self, project: str, response_id: str, include: list[str] | None = None) -> dict[str, Any]:
        run = await self.run_of(project, response_id)
        return (await replay(self.store, run, include)).response

    async def stream(self, project: str, response_id: str, after: int = 0,
                     include: list[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """The response's stream events numbered after ``after``, live until it ends."""
        run = await self.run_of(project, response_id)
        renderer = ResponseRenderer(run, include)
        async for out in rendered(self.runtime.events.follow(run["id"]), renderer):
            if out["sequence_number"] > after:
                yield out

    async def input_items(self, project: str, response_id: str) -> list[dict[str, Any]]:
        run = await self.run_of(project, response_id)
        return list(run.get("_input") or [])

    async def wait(self, project: str, run: dict[str, Any]) -> dict[str, Any]:
        renderer = ResponseRenderer(run)
        async for _ in rendered(self.runtime.events.follow(run["id"]), renderer):
            pass
        renderer.response["metadata"] = run.get("metadata") or {}
        return renderer.response

    # -- creating --------------------------------------------------------------------------

    async def _resolve(self, project: str, fields: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the items before this response, this response's input with references resolved)."""
        conversation = fields.get("conversation")
        before: list[dict[str, Any]] = []
        if conversation:
            if await self.store.get("conversation", conversation, project) is None:
                raise NotFoundError(f"Conversation with id '{conversation}' not found.", param="conversation")
            before = await history.expand_conversation(self.store, project, conversation)
        elif fields.get("previous_response_id"):
            await self.run_of(project, fields["previous_response_id"], param="previous_response_id")
            before = await history.chain_items(self.store, project, fields["previous_response_id"])
        own = item_rules.normalize_input(fields.get("input"))
        known = {item.get("id"): item for item in before if item.get("id")}
        resolved = []
        for item in own:
            if item["type"] != "item_reference":
                resolved.append(item)
                continue
            found = known.get(item["id"]) or await self._stored_message(project, item["id"])
            if found is None:
                raise InvalidRequestError(f"Item with id '{item['id']}' not found.", param=f"{item['_param']}.id",
                                          code="invalid_value")
            resolved.append(dict(found))
        return before, resolved

    async def _stored_message(self, project: str, item_id: str) -> dict[str, Any] | None:
        """An output message of any stored response (they are the engine's messages)."""
        message = await self.store.get("message", item_id, project)
        if message is None or message.get("role") != "assistant":
            return None
        text = "".join(p["text"]["value"] for p in message.get("content") or [] if p.get("type") == "text")
        return {"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}

    def _check(self, fields: dict[str, Any]) -> None:
        if fields.get("conversation") and fields.get("previous_response_id"):
            raise InvalidRequestError("'previous_response_id' cannot be used together with 'conversation'.",
                                      param="previous_response_id", code="invalid_value")
        if fields.get("background") and fields.get("store") is False:
            raise InvalidRequestError("Background responses must be stored: 'background' requires 'store' to be true.",
                                      param="background", code="invalid_value")
        choice = fields.get("tool_choice")
        tools = fields.get("tools") or []
        if isinstance(choice, dict) and choice.get("type") == "function" and \
                not any(t.get("name") == choice["name"] for t in tools):
            raise InvalidRequestError(f"tool_choice names function '{choice['name']}', which is not among the tools.",
                                      param="tool_choice", code="invalid_value")
        if isinstance(choice, dict) and choice.get("type") != "function" and \
                not any(t.get("type") == choice.get("type") for t in tools):
            raise InvalidRequestError(f"tool_choice requires the '{choice.get('type')}' tool, which is not among "
                                      "the tools.", param="tool_choice", code="invalid_value")
        if choice == "required" and not tools:
            raise InvalidRequestError("tool_choice 'required' needs at least one tool.", param="tool_choice",
                                      code="invalid_value")

    @staticmethod
    def _check_filters(tools: list[dict[str, Any]]) -> None:
        # The rules of POST /vector_stores/{id}/search; the same evaluator serves the tool.
        for i, tool in enumerate(tools):
            if tool.get("filters") is not None:
                try:
                    filter_rules.validate(tool["filters"], f"tools[{i}].filters")
                except filter_rules.InvalidFilter as exc:
                    raise InvalidRequestError(str(exc), param=exc.param, code="invalid_value") from None

    async def _check_stores(self, project: str, tools: list[dict[str, Any]]) -> None:
        for i, tool in enumerate(tools):
            for j, store_id in enumerate(tool.get("vector_store_ids") or []):
                if await self.store.get("vector_store", store_id, project) is None:
                    raise NotFoundError(f"Vector store with id '{store_id}' not found.",
                                        param=f"tools[{i}].vector_store_ids[{j}]")

    async def create(self, project: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Check, write the response and its hidden thread with the first events, launch it."""
        self._check(fields)
        self._check_filters(fields.get("tools") or [])
        await self._check_stores(project, fields.get("tools") or [])
        before, own = await self._resolve(project, fields)
        container_id = await self._container(project, fields)
        item_rules.check_calls([*before, *own], first_new=len(before))
        if not own:
            raise InvalidRequestError("'input' must have at least one item.", param="input",
                                      code="missing_required_parameter")
        created = now()
        thread_id = new_id("thread_")
        # The hidden thread holds the messages the engine writes; its id is never shown.
        thread: dict[str, Any] = {"id": thread_id, "object": "thread", "created_at": created, "metadata": {},
                                  "tool_resources": {}, "_response": True}
        tools = fields.get("tools") or []
        run = objects.new_run(thread_id=thread_id, assistant={"id": None, "model": fields["model"]}, fields={
            "model": fields["model"], "instructions": fields.get("instructions") or "", "tools": _run_tools(tools),
            "metadata": fields.get("metadata"), "temperature": fields.get("temperature"),
            "top_p": fields.get("top_p"), "max_completion_tokens": fields.get("max_output_tokens"),
            "tool_choice": _run_tool_choice(fields.get("tool_choice")),
            "parallel_tool_calls": fields.get("parallel_tool_calls"),
            "response_format": _response_format(fields.get("text")),
        })
        run.update({"id": new_id("resp_"), "_kind": KIND, "_input": own, "_response": {
            "background": bool(fields.get("background")), "instructions": fields.get("instructions"),
            "max_output_tokens": fields.get("max_output_tokens"), "max_tool_calls": fields.get("max_tool_calls"),
            "previous_response_id": fields.get("previous_response_id"), "conversation": fields.get("conversation"),
            "store": fields.get("store") is not False, "text": fields.get("text") or {"format": {"type": "text"}},
            "tool_choice": fields.get("tool_choice") or "auto", "tools": [_shown_tool(t) for t in tools],
            "include": list(fields.get("include") or []), "container_id": container_id,
            "truncation": fields.get("truncation") or "disabled", "user": fields.get("user")}})
        # OpenAI's default is "disabled": the whole chain is sent, however long.
        run["truncation_strategy"] = {"type": "auto" if fields.get("truncation") == "auto" else "disabled",
                                      "last_messages": None}
        if container_id:
            # The Code Interpreter session this run uses (see leases.session_subject): with several
            # processes, the one holding the container's session claims the run (affinity).
            run[leases.SESSION] = container_id
        ops: list[Op] = [Put("thread", thread, project), Put("run", run, project, parent=thread_id),
                         event("thread.run.created", run), event("thread.run.queued", run)]
        if fields.get("conversation"):
            ops.append(Put("conversation_item", {"id": f"ref_{run['id']}", "type": history.REF_TYPE,
                                                 "response_id": run["id"], "created_at": created},
                           project, parent=fields["conversation"]))
        keep = fields.get("store") is not False
        if not keep:  # purged once answered; after a crash, by the sweep (ephemeral.py)
            ops.append(self.ephemeral.marker(run["id"], project))
        await self.store.write(ops)
        if not keep:
            self.ephemeral.answering(run["id"])
        assert self.runtime.engine is not None
        self.runtime.engine.launch(run, project)
        return run

    async def _earlier_container(self, project: str, fields: dict[str, Any]) -> str | None:
        """The container of the previous response, or of the conversation's latest response."""
        previous = fields.get("previous_response_id")
        if previous:
            return ((await self.run_of(project, previous)).get("_response") or {}).get("container_id")
        if fields.get("conversation"):
            entries = await self.store.scan("conversation_item", parent=fields["conversation"])
            for entry in reversed(entries):
                if entry.get("type") == history.REF_TYPE:
                    run = await self.store.get("run", entry["response_id"], project)
                    found = ((run or {}).get("_response") or {}).get("container_id")
                    if found:
                        return str(found)
        return None

    async def _container(self, project: str, fields: dict[str, Any]) -> str | None:
        """The container the code_interpreter tool runs in: the one named, or for ``auto``
        the previous response's or the conversation's (while it lives: same variables), else
        a new one."""
        containers = self.runtime.extensions["containers"]
        for i, tool in enumerate(fields.get("tools") or []):
            if tool["type"] != "code_interpreter":
                continue
            spec = tool["container"]
            if isinstance(spec, str):
                await containers.usable(project, spec, param=f"tools[{i}].container")
                return spec
            containers.check_limits(spec.get("memory_limit"), spec.get("network_policy"), f"tools[{i}].container.")
            file_ids = list(spec.get("file_ids") or [])
            await self.runtime.files.require_all(project, file_ids, f"tools[{i}].container.file_ids")
            reused = await self._earlier_container(project, fields)
            alive = None
            if reused:
                try:
                    alive = await containers.get(project, reused)
                except NotFoundError:  # deleted since: a new one, as for a first response
                    alive = None
            if reused and alive is not None and not is_expired(alive):
                paths = {row["path"] for row in await containers.files(project, reused)}
                for file_id in file_ids:
                    meta = await self.runtime.files.get(project, file_id)
                    if f"/mnt/data/{meta.get('filename')}" not in paths:
                        await containers.add_file(project, reused, file_id=file_id)
                return str(reused)
            created = await containers.create(project, "auto", file_ids, None, spec.get("memory_limit"),
                                              spec.get("network_policy"), f"tools[{i}].container.")
            return str(created["id"])
        return None

    # -- changing --------------------------------------------------------------------------

    async def delete(self, project: str, response_id: str) -> dict[str, Any]:
        run = await self.run_of(project, response_id)
        await self.purge(run)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def purge(self, run: dict[str, Any]) -> None:
        """Remove the response and everything it wrote (its thread, messages, steps, events)."""
        if self.runtime.engine is not None:
            await self.runtime.engine.abandon(run["id"])
        await self.store.write([DeleteChildren("run_step", run["id"]), DeleteChildren("message", run["thread_id"]),
                                Delete("run", run["id"]), Delete("thread", run["thread_id"]),
                                self.ephemeral.delete_op(run["id"])])

    async def cancel(self, project: str, response_id: str) -> dict[str, Any]:
        run = await self.run_of(project, response_id)
        if not (run.get("_response") or {}).get("background"):
            raise InvalidRequestError("Only responses created with background=true can be cancelled.",
                                      param="response_id", code="invalid_value")
        if run["status"] not in ("queued", "in_progress", "cancelling"):
            shown = "completed" if run["status"] == "requires_action" else run["status"]
            raise InvalidRequestError(f"Cannot cancel a response with status '{shown}'.", param="response_id",
                                      code="invalid_value")
        assert self.runtime.engine is not None
        if run["status"] != "cancelling":
            await self.runtime.engine.cancel(project, run)
        deadline = asyncio.get_running_loop().time() + _CANCEL_SETTLE_S
        while asyncio.get_running_loop().time() < deadline:
            fresh = await self.run_of(project, response_id)
            if fresh["status"] in objects.TERMINAL_RUN_STATUSES:
                break
            await asyncio.sleep(0.02)
        response = await self.get(project, response_id)
        if response["status"] == "in_progress":
            response["status"] = "cancelled"  # settled by the process executing it, any moment now
        return response

    async def count_input_tokens(self, project: str, fields: dict[str, Any]) -> dict[str, Any]:
        before, own = await self._resolve(project, fields)
        messages = history.chat_messages([*before, *own])
        if fields.get("instructions"):
            messages.insert(0, {"role": "system", "content": fields["instructions"]})
        extra = estimate_tokens([{"content": _run_tools(fields.get("tools") or [])}]) if fields.get("tools") else 0
        return {"object": "response.input_tokens", "input_tokens": estimate_tokens(messages) + extra}
