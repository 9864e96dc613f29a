"""The interface between the run engine and a built-in tool (code_interpreter, file_search).

The engine owns the conversation with the model, the run steps and the stream; a tool only
says what the model is offered, does the work of one call, and may annotate the final text.
A tool must never write run or step objects itself: it returns what the step should show,
and streams partial step content through the ``ToolCallSink`` it is handed.

Who calls what, in a run that has the tool enabled:

1. ``prepare(ctx)`` once, before the first model turn (e.g. wait for a thread's vector store,
   copy files into a sandbox). Raise ``ToolUnavailable`` to fail the run with a clear error.
2. ``instructions(ctx)`` and ``functions(ctx)`` for every model turn.
3. While the model streams a call's arguments: ``input_delta(arguments_so_far, already_sent)``
   so the step can show e.g. the code as it is written.
4. ``call(ctx, call)`` when the call is complete; it returns a ``ToolResult``.
5. ``annotate(ctx, text)`` on the assistant's text (citations, sandbox file links).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from spindle.runtime import Runtime


class ToolUnavailable(Exception):
    """The tool cannot serve this run (expired store, sandbox missing...). Fails the run.

    ``code`` becomes ``last_error.code`` (``server_error`` or ``invalid_prompt`` in OpenAI's set)."""

    def __init__(self, message: str, code: str = "server_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class RunContext:
    """Everything a tool may read about the run it serves. Objects are OpenAI-shaped dicts."""

    runtime: Runtime
    project: str
    run: dict[str, Any]
    thread: dict[str, Any]
    assistant: dict[str, Any]
    # The run's effective tool list (assistant tools or the run's override).
    tools: list[dict[str, Any]]
    # Tool calls already completed in this run (step tool_call dicts, in order); lets
    # ``annotate`` map citation markers or file links back to what the calls produced.
    completed_calls: list[dict[str, Any]] = field(default_factory=list)
    # File ids the thread's messages attached for each tool type (``attachments`` with
    # ``tools: [{type}]``; v1 ``file_ids`` count for both built-in tools), oldest first.
    attachment_file_ids: dict[str, list[str]] = field(default_factory=dict)
    # The run's ``include[]`` values (e.g. file_search result content).
    include: list[str] = field(default_factory=list)
    # Scratch space a tool may use for the duration of one run in this process.
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def thread_id(self) -> str:
        return str(self.thread["id"])


@dataclass
class ToolCall:
    """One call the model made to a function this tool offered."""

    id: str  # the step tool_call id (``call_...``)
    function_name: str
    arguments: str  # raw JSON text as the model wrote it


@dataclass
class ToolResult:
    """What one call produced.

    ``output`` goes back to the model as the tool message. ``step_tool_call`` is the final
    tool_call object shown in the run step (without ``id``; the engine adds it), e.g.
    ``{"type": "code_interpreter", "code_interpreter": {"input": ..., "outputs": [...]}}``.
    ``message_content`` holds extra parts for the next assistant message, e.g.
    ``{"type": "image_file", "image_file": {"file_id": ...}}``.
    """

    output: str
    step_tool_call: dict[str, Any]
    message_content: list[dict[str, Any]] = field(default_factory=list)


# Streams a partial tool_call delta into the step (the engine adds ``index`` and ``id``),
# e.g. ``{"type": "code_interpreter", "code_interpreter": {"outputs": [{"index": 0, ...}]}}``.
ToolCallSink = Callable[[dict[str, Any]], Awaitable[None]]


class BuiltinTool(abc.ABC):
    """A built-in Assistants tool. One instance serves every run of the process."""

    #: the Assistants tool type this implements, e.g. ``"code_interpreter"``
    type: ClassVar[str]

    @abc.abstractmethod
    def functions(self, ctx: RunContext) -> list[dict[str, Any]]:
        """Chat-completions tool specs offered to the model (``{"type": "function", ...}``).

        The names must be unique across tools; the engine routes calls back by name."""

    def instructions(self, ctx: RunContext) -> str | None:
        """Extra system text for the model (e.g. the files available, how to cite)."""
        return None

    async def prepare(self, ctx: RunContext) -> None:
        """Called once before the first model turn of a run. May raise ``ToolUnavailable``."""

    def input_delta(self, function_name: str, arguments_so_far: str, already_sent: int) -> tuple[dict[str, Any] | None, int]:
        """Map the model's partial arguments to a step tool_call delta while they stream.

        Returns ``(delta or None, new already_sent)``; ``already_sent`` is the tool's own
        cursor (e.g. characters of code already shown), starting at 0."""
        return None, already_sent

    def forced_call_arguments(self, ctx: RunContext, function_name: str, last_user_text: str) -> str | None:
        """Arguments for a call the server makes itself when ``tool_choice`` forces this tool
        and the model does not call it (many local backends ignore ``tool_choice``); ``None``
        when the tool cannot be called without the model (code, functions)."""
        return None

    def initial_step_tool_call(self, function_name: str) -> dict[str, Any]:
        """The tool_call object shown when the call first appears in a step (without id)."""
        return {"type": self.type, self.type: {}}

    @abc.abstractmethod
    async def call(self, ctx: RunContext, call: ToolCall, sink: ToolCallSink) -> ToolResult:
        """Do the work of one call. Must not raise for the model's mistakes (bad code,
        bad arguments): those are an ``output`` the model can read and correct. May raise
        ``ToolUnavailable`` when the tool itself cannot work."""

    def annotate(self, ctx: RunContext, text: str) -> list[dict[str, Any]]:
        """Annotations for the assistant's text (``file_citation`` / ``file_path`` objects
        with ``text``, ``start_index``, ``end_index``), computed on the full text so far."""
        return []

    def pending_marker(self, text: str) -> int | None:
        """Where in ``text`` an annotation may still be forming (so the engine holds the
        tail back while streaming); ``None`` when nothing is pending."""
        return None

    async def on_thread_deleted(self, project: str, thread_id: str) -> None:
        """Release what the tool keeps for a thread (e.g. its sandbox session)."""

    async def start(self) -> None:
        """Called once when the server starts (e.g. warm a pool)."""

    async def shutdown(self) -> None:
        """Called once when the server stops."""
