"""One execution of a run: model turns, tool calls, steps, messages and their events.

An execution starts from what the store holds (so it can resume a run after
``submit_tool_outputs`` in any process), and writes every change together with the stream
event that reports it. It never keeps state that matters only in memory: when it pauses
(requires_action) or the process dies, the store has everything up to that point.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from spindle.engine import leases, objects, prompt, runstate
from spindle.engine.coalesce import coalesced
from spindle.engine.events import done_event, event
from spindle.engine.textstream import AnnotatedText
from spindle.engine.toolchoice import REMINDER, Offer, build_offer
from spindle.ids import new_id, now
from spindle.llm.client import ChatRequest, Finish, TextDelta, ToolCallDelta, UpstreamError
from spindle.runtime import Runtime
from spindle.services.messages import message_object
from spindle.store.base import AnyOf, AppendEvent, Conflict, Op, Put, Update
from spindle.tools.base import RunContext, ToolCall, ToolUnavailable

log = logging.getLogger(__name__)

_FORCED_RETRIES = 2


class RunStopped(Exception):
    """The run ended early with ``status`` (failed / incomplete); ``error`` is last_error."""

    def __init__(self, status: str, error: dict[str, Any] | None = None, incomplete: str | None = None,
                 server_fault: bool = True) -> None:
        super().__init__(status)
        self.status = status
        self.error = error
        self.incomplete = incomplete
        # OpenAI streams an `error` event only when the server failed, not for a run that
        # failed for its own reasons (a model ignoring a forced tool_choice).
        self.server_fault = server_fault


@dataclass
class _Call:
    """A tool call as it streams in from the model."""

    position: int  # index in the step's tool_calls list (the delta ``index``)
    id: str
    name: str = ""
    arguments: str = ""
    announced: bool = False
    cursor: int = 0  # the built-in tool's own input_delta cursor


@dataclass
class _Turn:
    message: dict[str, Any] | None = None
    message_step: dict[str, Any] | None = None
    text: AnnotatedText | None = None
    tool_step: dict[str, Any] | None = None
    calls: dict[int, _Call] = field(default_factory=dict)
    finish: Finish | None = None
    held_text: list[str] = field(default_factory=list)  # forced turns: text not shown


class Execution:
    def __init__(self, runtime: Runtime, run: dict[str, Any], project: str) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.run = run
        self.project = project
        self.ctx: RunContext | None = None
        # The status the store holds for this run: every run write expects it (compare-and-set).
        self.stored_status: str = run["status"]
        # Images and files made by built-in tools that wait for the next assistant message.
        # Kept on the run in the store (``_pending_parts``): they survive requires_action.
        self.pending_parts: list[dict[str, Any]] = list(run.get("_pending_parts") or [])
        self.thread_messages: list[dict[str, Any]] = []
        self.turns_taken = 0
        self.resumed = False

    # -- writing -------------------------------------------------------------------------

    async def write(self, ops: list[Op]) -> None:
        await self.store.write(ops)

    def put_run(self) -> Update:
        self.run["_pending_parts"] = self.pending_parts
        return runstate.run_update(self.run, self.stored_status)

    def put_step(self, step: dict[str, Any]) -> Put:
        return Put("run_step", step, self.project, parent=self.run["id"])

    def put_message(self, message: dict[str, Any], new: bool = False) -> Put | Update:
        if new:
            return Put("message", message, self.project, parent=self.run["thread_id"])
        return runstate.message_update(message)

    async def set_status(self, status: str, extra: list[Op] | None = None, done: bool = False,
                         expect: str | AnyOf | None = None, fields: dict[str, Any] | None = None) -> None:
        expected = self.stored_status if expect is None else expect
        objects.set_run_status(self.run, status)
        self.run["_pending_parts"] = self.pending_parts
        ops: list[Op] = [*(extra or []), runstate.run_update(self.run, expected, fields),
                         event(f"thread.run.{status}", self.run)]
        if status in objects.TERMINAL_RUN_STATUSES:
            ops.append(runstate.release_thread(self.run))
        if done:
            ops.append(done_event(self.run["id"]))
        await self.write(ops)
        self.stored_status = status
        metrics = self.runtime.extensions.get("metrics")
        if metrics is not None:
            if status in objects.TERMINAL_RUN_STATUSES:
                metrics.runs_finished.labels(status).inc()
            elif status == "in_progress" and fields:
                metrics.claim_seconds.observe(max(0.0, leases.queued_for(self.run)))

    # -- the run ---------------------------------------------------------------------------

    async def _load(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The run's thread and assistant (a hook: a response has a thread of its own and no
        assistant, see ``spindle.responses.execution``)."""
        thread = await self.store.get("thread", self.run["thread_id"], self.project)
        assistant = await self.store.get("assistant", self.run["assistant_id"], self.project)
        return thread, assistant

    async def execute(self) -> None:
        thread, assistant = await self._load()
        if thread is None:
            return  # deleted meanwhile; nothing left to report to
        if assistant is None:
            await self.stop(RunStopped("failed", {"code": "server_error",
                                                   "message": f"Assistant {self.run['assistant_id']} was deleted."}))
            return
        # A run that never started has no steps yet; one resumed after tool outputs has.
        self.resumed = bool(self.run.get("started_at"))
        steps = await self.store.scan("run_step", parent=self.run["id"]) if self.resumed else []
        self.thread_messages = await self.store.scan("message", parent=thread["id"])
        self.ctx = RunContext(runtime=self.runtime, project=self.project, run=self.run, thread=thread,
                              assistant=assistant, tools=self.run["tools"], include=self.run.get("_include") or [],
                              attachment_file_ids=_attachments(self.thread_messages))
        self.ctx.completed_calls = [c for s in steps if s["step_details"]["type"] == "tool_calls"
                                    for c in s["step_details"]["tool_calls"]]
        try:
            # The claim: queued → in_progress once, by this process, which now holds the lease.
            engine = self.runtime.engine
            claim = leases.claim_fields(engine.owner, engine.lease_s) if engine is not None else None
            await self.set_status("in_progress", fields=claim)
            self._check_tools_available()
            if not steps:
                for tool in self._builtins():
                    await tool.prepare(self.ctx)
            await self._loop(first_turn=not steps)
        except RunStopped as stop:
            await self.stop(stop)
        except ToolUnavailable as exc:
            await self.stop(RunStopped("failed", {"code": exc.code, "message": exc.message}))
        except UpstreamError as exc:
            await self.stop(RunStopped("failed", {"code": exc.code, "message": exc.message}))
        except Conflict as exc:
            # Someone else moved the run first (a cancel, an expiry): theirs is the status.
            log.info("run %s changed under its execution: %s", self.run["id"], exc)
            await asyncio.shield(self._settle())
        except asyncio.CancelledError:
            # A client's cancel wrote "cancelling" first; a shutdown did not, and then the
            # run is left in progress for the restart recovery to fail (nothing is written).
            await asyncio.shield(self._settle())
            raise
        except Exception:
            log.exception("run %s failed with an internal error", self.run["id"])
            await self.stop(RunStopped("failed", {"code": "server_error",
                                                   "message": "The server had an error while processing this run."}))

    async def _loop(self, first_turn: bool) -> None:
        limit = self.runtime.settings.server.max_tool_iterations
        turns = 0
        while True:
            turns += 1
            if turns > limit:
                raise RunStopped("incomplete", incomplete="max_tool_iterations")
            outcome = await self._turn(first_turn)
            self.turns_taken += 1
            first_turn = False
            if outcome == "continue":
                continue
            if outcome == "requires_action":
                return
            await self._complete()
            return

    def _check_tools_available(self) -> None:
        problems = self.runtime.extensions.get("tool_problems", {})
        for tool in self.run["tools"]:
            kind = tool.get("type")
            if kind != "function" and kind not in self.runtime.tools:
                reason = problems.get(kind, "it is not installed on this server")
                raise RunStopped("failed", {"code": "server_error",
                                            "message": f"The {kind} tool is unavailable on this server: {reason}"})

    def _builtins(self) -> list[Any]:
        kinds = {t.get("type") for t in self.run["tools"]}
        return [tool for kind, tool in self.runtime.tools.items() if kind in kinds]

    # -- one model turn --------------------------------------------------------------------

    async def _conversation(self, offer: Offer) -> list[dict[str, Any]]:
        assert self.ctx is not None
        system = self.run.get("instructions") or ""
        for tool in self._builtins():
            extra = tool.instructions(self.ctx)
            if extra:
                system = f"{system}\n\n{extra}" if system else extra
        thread_messages = self.thread_messages
        if self.turns_taken:  # this run has written messages and steps since the last read
            thread_messages = await self.store.scan("message", parent=self.run["thread_id"])
        own = {m["id"]: m for m in thread_messages if m.get("run_id") == self.run["id"]}
        history = await self._history(thread_messages)
        steps = await self.store.scan("run_step", parent=self.run["id"]) if self.turns_taken or self.resumed else []
        names = {tool.type: name for name, tool in offer.builtin_by_name.items()}
        progress = prompt.steps_to_chat(steps, own, names)
        head = [{"role": "system", "content": system}] if system else []
        fixed = prompt.estimate_tokens(head + progress)
        budget = self.run.get("max_prompt_tokens")
        if budget and fixed >= budget:
            raise RunStopped("incomplete", incomplete="max_prompt_tokens")
        history = prompt.truncate(history, self.run.get("truncation_strategy"), budget, fixed)
        return head + history + progress

    async def _history(self, thread_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation before this run, as chat messages (a hook: a response reads its
        input items and the responses before it instead of thread messages)."""
        return [prompt.message_to_chat(m) for m in thread_messages if m.get("run_id") != self.run["id"]]

    def _request(self, messages: list[dict[str, Any]], offer: Offer) -> ChatRequest:
        max_tokens = None
        if self.run.get("max_completion_tokens"):
            used = (self.run.get("usage") or {}).get("completion_tokens", 0)
            max_tokens = self.run["max_completion_tokens"] - used
            if max_tokens <= 0:
                raise RunStopped("incomplete", incomplete="max_completion_tokens")
        response_format = self.run.get("response_format")
        return ChatRequest(
            model=self.run["model"], messages=messages, tools=offer.specs or None, tool_choice=offer.choice,
            parallel_tool_calls=self.run.get("parallel_tool_calls") if offer.specs else None,
            temperature=self.run.get("temperature"), top_p=self.run.get("top_p"), max_tokens=max_tokens,
            response_format=response_format if isinstance(response_format, dict) else None,
        )

    async def _turn(self, first_turn: bool) -> str:
        assert self.ctx is not None
        offer = build_offer(self.ctx, self.runtime.tools, self.run.get("tool_choice"), first_turn)
        messages = await self._conversation(offer)
        for attempt in range(_FORCED_RETRIES + 1):
            turn = _Turn()
            await self._stream_turn(self._request(messages, offer), offer, turn)
            if not offer.forced or any(c.name in offer.required_names for c in turn.calls.values()):
                break
            if await self._call_in_models_place(turn, offer):
                break
            if attempt == _FORCED_RETRIES:
                raise RunStopped("failed", {"code": "server_error", "message": (
                    f"The model did not call {sorted(offer.required_names)} although tool_choice required it.")},
                    server_fault=False)
            messages = messages + [{"role": "system", "content": REMINDER.format(names=", ".join(sorted(offer.required_names)))}]
        return await self._after_turn(turn, offer)

    async def _call_in_models_place(self, turn: _Turn, offer: Offer) -> bool:
        """A forced built-in tool that the model did not call is called by the server itself
        when the tool can be (file_search: the user's last message is the query); the model
        then answers from the results on its next turn. False when no forced tool can."""
        last_user = next((m for m in reversed(self.thread_messages) if m.get("role") == "user"), None)
        text = " ".join(p["text"]["value"] for p in (last_user or {}).get("content") or [] if p.get("type") == "text")
        for name in sorted(offer.required_names):
            builtin = offer.builtin_by_name.get(name)
            arguments = builtin.forced_call_arguments(self.ctx, name, text) if builtin and self.ctx else None
            if arguments is None:
                continue
            log.info("run %s: the model ignored tool_choice; calling %s itself", self.run["id"], name)
            turn.held_text.clear()
            delta = ToolCallDelta(index=max(turn.calls, default=-1) + 1, name=name, arguments=arguments)
            await self.write(self._on_tool_delta(turn, offer, delta))
            return True
        return False

    async def _stream_turn(self, request: ChatRequest, offer: Offer, turn: _Turn) -> None:
        metrics = self.runtime.extensions.get("metrics")
        started = time.perf_counter()
        try:
            await self._stream_turn_once(request, offer, turn)
        except UpstreamError as exc:
            if metrics is not None:
                metrics.upstream_errors.labels(exc.code).inc()
            raise
        if metrics is not None:
            metrics.upstream_seconds.observe(time.perf_counter() - started)

    async def _stream_turn_once(self, request: ChatRequest, offer: Offer, turn: _Turn) -> None:
        async for batch in coalesced(self.runtime.model.stream(request)):
            ops: list[Op] = []
            for delta in batch:
                if isinstance(delta, TextDelta):
                    if offer.forced:
                        turn.held_text.append(delta.text)
                    else:
                        ops += self._on_text(turn, delta.text)
                elif isinstance(delta, ToolCallDelta):
                    ops += self._on_tool_delta(turn, offer, delta)
                elif isinstance(delta, Finish):
                    turn.finish = delta
            if ops:
                await self.write(ops)
        if turn.finish is None:
            raise UpstreamError("The model backend ended its stream without finishing the answer.")
        if offer.forced and not turn.calls and turn.held_text:
            return  # retried by the caller; the text is never shown
        if offer.forced and turn.held_text and turn.calls:
            turn.held_text.clear()  # a forced call was made; drop any chatter around it

    def _on_text(self, turn: _Turn, text: str) -> list[Op]:
        ops: list[Op] = []
        if turn.message is None:
            ops += self._open_message(turn)
        assert turn.text is not None and turn.message is not None
        released = turn.text.feed(text)
        if released:
            ops.append(self._text_delta(turn, *released))
        return ops

    def _open_message(self, turn: _Turn) -> list[Op]:
        assert self.ctx is not None
        message = message_object(thread_id=self.run["thread_id"], role="assistant", content=[],
                                 assistant_id=self.run["assistant_id"], run_id=self.run["id"], status="in_progress")
        step = objects.new_step(self.run, "message_creation",
                                {"type": "message_creation", "message_creation": {"message_id": message["id"]}})
        turn.message, turn.message_step = message, step
        tools = self._builtins()
        ctx = self.ctx
        turn.text = AnnotatedText([functools.partial(t.annotate, ctx) for t in tools],
                                  [t.pending_marker for t in tools])
        ops: list[Op] = [self.put_step(step), event("thread.run.step.created", step),
                         event("thread.run.step.in_progress", step), self.put_message(message, new=True),
                         event("thread.message.created", message), event("thread.message.in_progress", message)]
        if self.pending_parts:
            parts, self.pending_parts = self.pending_parts, []
            message["content"].extend(parts)
            ops.append(self.put_run())  # the parts now live in the message, not on the run
            ops.append(event("thread.message.delta", {
                "id": message["id"], "object": "thread.message.delta", "_run_id": self.run["id"],
                "delta": {"content": [{"index": i, **p} for i, p in enumerate(parts)]}}))
        message["content"].append({"type": "text", "text": {"value": "", "annotations": []}})
        return ops

    def _text_delta(self, turn: _Turn, segment: str, annotations: list[dict[str, Any]]) -> Op:
        assert turn.message is not None
        index = len(turn.message["content"]) - 1
        part = turn.message["content"][index]["text"]
        part["value"] += segment
        part["annotations"].extend({k: v for k, v in a.items() if k != "index"} for a in annotations)
        text: dict[str, Any] = {"value": segment}
        if annotations:
            text["annotations"] = annotations
        return event("thread.message.delta", {
            "id": turn.message["id"], "object": "thread.message.delta", "_run_id": self.run["id"],
            "delta": {"content": [{"index": index, "type": "text", "text": text}]}})

    def _on_tool_delta(self, turn: _Turn, offer: Offer, delta: ToolCallDelta) -> list[Op]:
        ops: list[Op] = []
        if turn.tool_step is None:
            step = objects.new_step(self.run, "tool_calls", {"type": "tool_calls", "tool_calls": []})
            turn.tool_step = step
            ops += [self.put_step(step), event("thread.run.step.created", step),
                    event("thread.run.step.in_progress", step)]
        call = turn.calls.get(delta.index)
        if call is None:
            call = _Call(position=len(turn.calls), id=delta.id or new_id("call_"))
            turn.calls[delta.index] = call
        if delta.name:
            call.name += delta.name
        call.arguments += delta.arguments
        if not call.name:
            return ops
        builtin = offer.builtin_by_name.get(call.name)
        if not call.announced:
            call.announced = True
            initial = builtin.initial_step_tool_call(call.name) if builtin else {
                "type": "function", "function": {"name": call.name, "arguments": "", "output": None}}
            turn.tool_step["step_details"]["tool_calls"].append({"id": call.id, **initial})
            ops.append(self._step_delta(turn.tool_step, {"index": call.position, "id": call.id, **initial}))
            if builtin is None and call.arguments:
                ops.append(self._step_delta(turn.tool_step, {"index": call.position, "type": "function",
                                                             "function": {"arguments": call.arguments}}))
            elif builtin is not None:
                ops += self._builtin_input(turn, builtin, call)
            return ops
        if delta.arguments:
            if builtin is None:
                ops.append(self._step_delta(turn.tool_step, {"index": call.position, "type": "function",
                                                             "function": {"arguments": delta.arguments}}))
            else:
                ops += self._builtin_input(turn, builtin, call)
        return ops

    def _builtin_input(self, turn: _Turn, builtin: Any, call: _Call) -> list[Op]:
        assert turn.tool_step is not None
        update, call.cursor = builtin.input_delta(call.name, call.arguments, call.cursor)
        if not update:
            return []
        return [self._step_delta(turn.tool_step, {"index": call.position, **update})]

    def _step_delta(self, step: dict[str, Any], tool_call: dict[str, Any]) -> Op:
        return event("thread.run.step.delta", {
            "id": step["id"], "object": "thread.run.step.delta", "run_id": self.run["id"],
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": [tool_call]}}})

    # -- after the model's turn ------------------------------------------------------------

    async def _after_turn(self, turn: _Turn, offer: Offer) -> str:
        assert turn.finish is not None
        usage = turn.finish.usage
        self.run["usage"] = objects.add_usage(self.run.get("usage"), usage)
        ops: list[Op] = []
        if turn.text is not None:
            released = turn.text.flush()
            if released:
                ops.append(self._text_delta(turn, *released))
        if turn.message is not None:
            ops += self._close_message(turn, usage if turn.tool_step is None else None)
        if ops:
            await self.write(ops + [self.put_run()])
        if turn.finish.reason == "length" and not turn.calls:
            if self.run.get("max_completion_tokens"):
                raise RunStopped("incomplete", incomplete="max_completion_tokens")
        if turn.tool_step is None:
            return "done"
        turn.tool_step["usage"] = _usage(usage)
        calls = [c for c in sorted(turn.calls.values(), key=lambda c: c.position) if c.name]
        if not self.run.get("parallel_tool_calls", True) and len(calls) > 1:
            calls = calls[:1]
            turn.tool_step["step_details"]["tool_calls"] = turn.tool_step["step_details"]["tool_calls"][:1]
        functions = []
        for call in calls:
            builtin = offer.builtin_by_name.get(call.name)
            if builtin is not None:
                await self._run_builtin(turn.tool_step, call, builtin)
            elif call.name in offer.function_names:
                functions.append(call)
            else:
                self._answer_unknown(turn.tool_step, call, offer)
        if functions:
            await self._require_action(turn.tool_step, functions)
            return "requires_action"
        objects.finish_step(turn.tool_step, "completed")
        await self.write([self.put_step(turn.tool_step), event("thread.run.step.completed", turn.tool_step),
                          self.put_run()])
        return "continue"

    def _close_message(self, turn: _Turn, usage: dict[str, int] | None) -> list[Op]:
        assert turn.message is not None and turn.message_step is not None
        message, step = turn.message, turn.message_step
        if turn.finish is not None and turn.finish.reason == "length":
            message["status"] = "incomplete"
            message["incomplete_at"] = now()
            message["incomplete_details"] = {"reason": "max_tokens"}
            closing = "thread.message.incomplete"
        else:
            message["status"] = "completed"
            message["completed_at"] = now()
            closing = "thread.message.completed"
        objects.finish_step(step, "completed")
        step["usage"] = _usage(usage) if usage else None
        return [self.put_message(message), event(closing, message), self.put_step(step),
                event("thread.run.step.completed", step)]

    async def _run_builtin(self, step: dict[str, Any], call: _Call, builtin: Any) -> None:
        assert self.ctx is not None
        index = next(i for i, c in enumerate(step["step_details"]["tool_calls"]) if c["id"] == call.id)

        async def sink(update: dict[str, Any]) -> None:
            await self.write([self._step_delta(step, {"index": index, **update})])

        result = await builtin.call(self.ctx, ToolCall(call.id, call.name, call.arguments), sink)
        final = {"id": call.id, **result.step_tool_call, "_arguments": call.arguments, "_output": result.output}
        step["step_details"]["tool_calls"][index] = final
        self.ctx.completed_calls.append(final)
        self.pending_parts.extend(result.message_content)
        await self.write([self.put_step(step), self.put_run()])

    def _answer_unknown(self, step: dict[str, Any], call: _Call, offer: Offer) -> None:
        index = next(i for i, c in enumerate(step["step_details"]["tool_calls"]) if c["id"] == call.id)
        names = sorted({s["function"]["name"] for s in offer.specs})
        step["step_details"]["tool_calls"][index]["function"]["output"] = (
            f"Error: there is no tool named '{call.name}'. Available tools: {names}.")

    async def _require_action(self, step: dict[str, Any], calls: list[_Call]) -> None:
        self.run["required_action"] = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]}}
        self.run["expires_at"] = now() + self.runtime.settings.server.requires_action_expiry_s
        for item in step["step_details"]["tool_calls"]:
            if item["type"] == "function" and any(c.id == item["id"] for c in calls):
                item["function"]["arguments"] = next(c.arguments for c in calls if c.id == item["id"])
        await self.set_status("requires_action", [self.put_step(step)], done=True)

    async def _complete(self) -> None:
        ops: list[Op] = []
        if self.pending_parts:
            # Files the code made but the model never wrote about still reach the user.
            message = message_object(thread_id=self.run["thread_id"], role="assistant", content=self.pending_parts,
                                     assistant_id=self.run["assistant_id"], run_id=self.run["id"])
            step = objects.finish_step(objects.new_step(self.run, "message_creation", {
                "type": "message_creation", "message_creation": {"message_id": message["id"]}}), "completed")
            created = dict(message, status="in_progress", content=[])
            ops += [self.put_step(step), event("thread.run.step.created", dict(step, status="in_progress", completed_at=None)),
                    self.put_message(message, new=True), event("thread.message.created", created),
                    event("thread.message.delta", {"id": message["id"], "object": "thread.message.delta",
                                                   "_run_id": self.run["id"], "delta": {"content": [
                                                       {"index": i, **p} for i, p in enumerate(self.pending_parts)]}}),
                    event("thread.message.completed", message), event("thread.run.step.completed", step)]
            self.pending_parts = []
        await self.set_status("completed", ops, done=True)

    # -- endings -------------------------------------------------------------------------

    async def _close_open(self, step_status: str) -> list[Op]:
        """Close whatever this run left open: steps → ``step_status``, messages → incomplete."""
        ops: list[Op] = []
        for step in await self.store.scan("run_step", {"status": "in_progress"}, parent=self.run["id"]):
            objects.finish_step(step, step_status, self.run.get("last_error") if step_status == "failed" else None)
            ops += [self.put_step(step), event(f"thread.run.step.{step_status}", step)]
        for message in await self.store.scan("message", {"status": "in_progress", "run_id": self.run["id"]},
                                             parent=self.run["thread_id"]):
            message["status"] = "incomplete"
            message["incomplete_at"] = now()
            message["incomplete_details"] = {"reason": "run_cancelled" if step_status == "cancelled" else "run_failed"}
            ops += [self.put_message(message), event("thread.message.incomplete", message)]
        return ops

    async def stop(self, stop: RunStopped) -> None:
        if stop.error is not None:
            self.run["last_error"] = stop.error
        if stop.incomplete is not None:
            self.run["incomplete_details"] = {"reason": stop.incomplete}
        ops = await self._close_open("failed" if stop.status == "failed" else "cancelled")
        if stop.status == "failed" and stop.error is not None and stop.server_fault:
            # A failure mid-stream is also an `error` event (an ErrorObject, which the SDK
            # passes to handlers without raising), then the run's own `thread.run.failed`.
            ops.append(AppendEvent(self.run["id"], "error", {
                "message": stop.error["message"], "type": "server_error", "param": None, "code": stop.error["code"]}))
        await self.set_status(stop.status, ops, done=True)

    async def cancelled(self) -> None:
        """cancelling → cancelled (only from cancelling: a status moves once)."""
        ops = await self._close_open("cancelled")
        await self.set_status("cancelled", ops, done=True, expect="cancelling")

    async def _settle(self) -> None:
        """After a conflict or a cancellation: finish a cancel the store asks for, else leave
        the run as the store has it."""
        fresh = await self.store.get("run", self.run["id"], self.project)
        if fresh is None or fresh["status"] != "cancelling":
            return
        self.run, self.stored_status = fresh, "cancelling"
        try:
            await self.cancelled()
        except Conflict:
            pass  # cancelled meanwhile by another writer


def _attachments(messages: list[dict[str, Any]]) -> dict[str, list[str]]:
    """File ids attached to the thread's messages, per tool type, oldest first."""
    out: dict[str, list[str]] = {}
    for message in messages:
        for attachment in message.get("attachments") or []:
            for tool in attachment.get("tools") or []:
                ids = out.setdefault(tool["type"], [])
                if attachment["file_id"] not in ids:
                    ids.append(attachment["file_id"])
    return out


def _usage(usage: dict[str, int] | None) -> dict[str, int] | None:
    if not usage:
        return None
    return objects.add_usage(None, usage)


# Other kinds of run execute with a subclass, chosen by the run's ``_kind`` (a Responses API
# response is a run of kind "response"); registered at start-up, see ``spindle.app``.
EXECUTION_KINDS: dict[str, type[Execution]] = {}


def execution_for(run: dict[str, Any]) -> type[Execution]:
    return EXECUTION_KINDS.get(str(run.get("_kind") or ""), Execution)
