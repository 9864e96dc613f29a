"""The Responses renderer: a run's event log, read as a response.

A response is a run (see docs/responses.md); its event log holds the engine's ``thread.*``
events. ``ResponseRenderer`` reads that log from the start and yields the Responses stream
(``response.created`` ... ``response.completed``) with its ``sequence_number``s, and keeps the
response object they describe. Rendering is a pure function of the log, so the same log
always gives the same events and numbers: a stream resumed with ``starting_after=N`` is the
same stream from N on, and ``GET /v1/responses/{id}`` is the object the last event carried.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

from spindle.engine.events import DONE
from spindle.store.base import MetadataStore, StoredEvent

# Run statuses as a response shows them (a run being cancelled is still in progress).
_STATUS = {"queued": "queued", "in_progress": "in_progress", "cancelling": "in_progress",
           "requires_action": "completed", "completed": "completed", "failed": "failed",
           "cancelled": "cancelled", "expired": "failed", "incomplete": "incomplete"}
_INCOMPLETE = {"max_completion_tokens": "max_output_tokens", "max_prompt_tokens": "max_output_tokens",
               "max_tool_iterations": "max_output_tokens"}
_ENDINGS = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}
# Written by ResponseExecution after a built-in tool call: what the item shows beyond the step.
BUILTIN_DONE = "spindle.builtin_call.done"
_ITEM_PREFIX = {"function": "fc_", "file_search": "fs_", "code_interpreter": "ci_"}


def function_item_id(call_id: str, kind: str = "function") -> str:
    return _ITEM_PREFIX.get(kind, "fc_") + call_id.removeprefix("call_")


def strip_markers(segment: str, raw_offset: int, clean_offset: int, annotations: list[dict[str, Any]],
                  filenames: dict[str, str], container_files: dict[str, dict[str, str]] | None = None,
                  container_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The engine's text keeps citation markers (``【0:1†a.pdf】``, the Assistants form) with
    annotations spanning them; a response's text has no markers and each ``file_citation``
    says where it belongs (``index`` in the text). ``raw_offset``/``clean_offset``: where
    ``segment`` starts in the raw and in the cleaned text. A ``file_path`` annotation (a
    ``sandbox:/mnt/data/...`` link to a File the code wrote) stays in the text and becomes a
    ``container_file_citation`` of the container file made from it (``container_files``)."""
    out: list[str] = []
    notes: list[dict[str, Any]] = []
    cursor = 0
    for note in sorted(annotations, key=lambda a: int(a.get("start_index") or 0)):
        citation = note.get("file_citation") if note.get("type") == "file_citation" else None
        start, end = int(note.get("start_index") or 0) - raw_offset, int(note.get("end_index") or 0) - raw_offset
        linked = (container_files or {}).get(str((note.get("file_path") or {}).get("file_id") or "")) \
            if note.get("type") == "file_path" else None
        if linked is not None and 0 <= start <= end <= len(segment) and start >= cursor:
            at = clean_offset + sum(len(p) for p in out) + (start - cursor)
            notes.append({"type": "container_file_citation", "container_id": container_id or "",
                          "file_id": linked["file_id"], "filename": linked["filename"],
                          "start_index": at, "end_index": at + end - start})
            continue
        if not isinstance(citation, dict) or not 0 <= start <= end <= len(segment) or start < cursor:
            continue
        out.append(segment[cursor:start])
        cursor = end
        file_id = str(citation.get("file_id") or "")
        notes.append({"type": "file_citation", "file_id": file_id, "filename": filenames.get(file_id, ""),
                      "index": clean_offset + sum(len(p) for p in out)})
    out.append(segment[cursor:])
    return "".join(out), notes


def usage_of(run_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not run_usage:
        return None
    return {"input_tokens": run_usage.get("prompt_tokens", 0),
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": run_usage.get("completion_tokens", 0),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": run_usage.get("total_tokens", 0)}


def base_response(run: dict[str, Any]) -> dict[str, Any]:
    """The response object as it stands before any event (from the stored run)."""
    fields: dict[str, Any] = run.get("_response") or {}
    return {
        "id": run["id"], "object": "response", "created_at": run["created_at"], "status": "queued",
        "background": bool(fields.get("background")), "error": None, "incomplete_details": None,
        "instructions": fields.get("instructions"), "max_output_tokens": fields.get("max_output_tokens"),
        "max_tool_calls": fields.get("max_tool_calls"), "model": run["model"], "output": [],
        "parallel_tool_calls": run.get("parallel_tool_calls", True),
        "previous_response_id": fields.get("previous_response_id"),
        "conversation": {"id": fields["conversation"]} if fields.get("conversation") else None,
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
        "store": fields.get("store", True), "temperature": run.get("temperature"),
        "text": fields.get("text") or {"format": {"type": "text"}}, "tool_choice": fields.get("tool_choice", "auto"),
        "tools": fields.get("tools") or [], "top_p": run.get("top_p"), "truncation": fields.get("truncation") or "disabled",
        "usage": None, "user": fields.get("user"), "metadata": run.get("metadata") or {}, "completed_at": None,
    }


class ResponseRenderer:
    def __init__(self, run: dict[str, Any], include: list[str] | None = None) -> None:
        self.response = base_response(run)
        self.seq = 0
        self.finished = False
        self._messages: dict[str, int] = {}  # message id -> output index
        self._parts: dict[str, set[int]] = {}  # message id -> content indexes announced
        self._closed: set[str] = set()  # messages whose done events were sent
        self._not_text: dict[str, set[int]] = {}  # message id -> engine content indexes that are not text
        self._raw: dict[tuple[str, int], int] = {}  # (message id, content index) -> raw characters seen
        self._builtin: dict[str, int] = {}  # built-in call id -> output index
        self._filenames: dict[str, str] = {}  # file id -> name, from the file searches so far
        self._container_id = (run.get("_response") or {}).get("container_id")
        self._container_files: dict[str, dict[str, str]] = {}  # File id -> its container file
        self._ci_calls: dict[tuple[str, int], str] = {}  # (step id, call index) -> code interpreter call id
        self._functions = {t.get("name") for t in self.response["tools"] if t.get("type") == "function"}
        # What the create request asked to include, and what a later read asks for.
        self._include = set((run.get("_response") or {}).get("include") or []) | set(include or [])
        self._calls: dict[tuple[str, int], int] = {}  # (step id, call index) -> output index

    # -- output -------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"type": kind, "sequence_number": self.seq, **fields}

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)

    def _apply_run(self, run: dict[str, Any]) -> None:
        status = _STATUS.get(run.get("status") or "", "in_progress")
        self.response["status"] = status
        self.response["usage"] = usage_of(run.get("usage"))
        self.response["metadata"] = run.get("metadata") or {}
        error = run.get("last_error")
        self.response["error"] = {"code": error.get("code") or "server_error", "message": error.get("message") or ""} \
            if status == "failed" and error else None
        reason = str((run.get("incomplete_details") or {}).get("reason") or "")
        self.response["incomplete_details"] = {"reason": _INCOMPLETE.get(reason, "max_output_tokens")} \
            if status == "incomplete" else None
        if status == "completed":
            self.response["completed_at"] = run.get("completed_at")

    # -- input --------------------------------------------------------------------------

    def feed(self, name: str, data: Any) -> list[dict[str, Any]]:
        """The response events one log event makes (often none)."""
        if name == DONE:
            self.finished = True
            return []
        if name == "error":
            return [self._event("error", code=data.get("code"), message=data.get("message") or "", param=None)]
        if name == BUILTIN_DONE:
            return self._builtin_done(data)
        if name.startswith("thread.run.step."):
            return self._step(name, data)
        if name.startswith("thread.message."):
            return self._message(name, data)
        if name.startswith("thread.run."):
            return self._run(name, data)
        return []

    def _run(self, name: str, run: dict[str, Any]) -> list[dict[str, Any]]:
        phase = name.removeprefix("thread.run.")
        self._apply_run(run)
        if phase == "created":
            if not self.response["background"]:
                self.response["status"] = "in_progress"  # as OpenAI shows a foreground response
            return [self._event("response.created", response=self._snapshot())]
        if phase == "queued":
            return [self._event("response.queued", response=self._snapshot())] if self.response["background"] else []
        if phase == "in_progress":
            return [self._event("response.in_progress", response=self._snapshot())]
        ending = _ENDINGS.get(self.response["status"])
        if ending is not None and phase in ("completed", "incomplete", "failed", "expired"):
            return [self._event(ending, response=self._snapshot())]
        return []  # cancelling / cancelled: OpenAI's stream has no event for them

    def _message(self, name: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        message_id = message["id"]
        if name == "thread.message.created":
            index = len(self.response["output"])
            self._messages[message_id] = index
            self._parts[message_id] = set()
            self._not_text[message_id] = {i for i, p in enumerate(message.get("content") or [])
                                          if p.get("type") != "text"}
            item = {"id": message_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
            self.response["output"].append(item)
            return [self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item))]
        if message_id not in self._messages:
            return []
        index = self._messages[message_id]
        item = self.response["output"][index]
        if name == "thread.message.delta":
            for part in message.get("delta", {}).get("content") or []:
                if part.get("type") != "text":
                    # A figure the code showed: the engine puts it in the message, a response in
                    # the code_interpreter_call's outputs; text parts are numbered without it.
                    self._not_text.setdefault(message_id, set()).add(int(part.get("index") or 0))
                    continue
                content_index = self._text_index(message_id, int(part["index"]))
                events += self._open_part(message_id, index, content_index)
                raw = (part.get("text") or {}).get("value") or ""
                target = item["content"][content_index]
                delta, notes = strip_markers(raw, self._raw.get((message_id, content_index), 0), len(target["text"]),
                                             (part.get("text") or {}).get("annotations") or [], self._filenames,
                                             self._container_files, self._container_id)
                self._raw[(message_id, content_index)] = self._raw.get((message_id, content_index), 0) + len(raw)
                target["text"] += delta
                if delta:
                    events.append(self._event("response.output_text.delta", item_id=message_id, output_index=index,
                                              content_index=content_index, delta=delta, logprobs=[]))
                for note in notes:
                    target["annotations"].append(note)
                    events.append(self._event("response.output_text.annotation.added", item_id=message_id,
                                              output_index=index, content_index=content_index,
                                              annotation_index=len(target["annotations"]) - 1, annotation=note))
            return events
        if name in ("thread.message.completed", "thread.message.incomplete"):
            texts: dict[int, str] = {}
            cited: dict[int, list[dict[str, Any]]] = {}
            for i, part in enumerate(p for p in message.get("content") or [] if p.get("type") == "text"):
                if part.get("type") == "text":
                    texts[i], cited[i] = strip_markers(part["text"]["value"], 0, 0,
                                                       part["text"].get("annotations") or [], self._filenames,
                                                       self._container_files, self._container_id)
            status = "completed" if name.endswith("completed") else "incomplete"
            if message_id in self._closed:  # closed early (a function call followed): only the object
                for content_index, text in texts.items():
                    if content_index < len(item["content"]):
                        item["content"][content_index].update(text=text, annotations=cited[content_index])
                item["status"] = status
                return []
            return self._close_message(message_id, texts, status, cited)
        return events

    def _text_index(self, message_id: str, index: int) -> int:
        return index - sum(1 for i in self._not_text.get(message_id, ()) if i < index)

    def _close_message(self, message_id: str, texts: dict[int, str], status: str,
                       notes: dict[int, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
        self._closed.add(message_id)
        index = self._messages[message_id]
        item = self.response["output"][index]
        events: list[dict[str, Any]] = []
        for content_index, text in sorted(texts.items()):
            events += self._open_part(message_id, index, content_index)
            item["content"][content_index]["text"] = text
            if notes is not None:
                item["content"][content_index]["annotations"] = notes[content_index]
            events.append(self._event("response.output_text.done", item_id=message_id, output_index=index,
                                      content_index=content_index, text=text, logprobs=[]))
            events.append(self._event("response.content_part.done", item_id=message_id, output_index=index,
                                      content_index=content_index, part=copy.deepcopy(item["content"][content_index])))
        item["status"] = status
        events.append(self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)))
        return events

    def _close_open_messages(self) -> list[dict[str, Any]]:
        """OpenAI's items follow one another: a message is done before a function call starts
        (the engine closes it only after the model's turn; its text is complete by then)."""
        events: list[dict[str, Any]] = []
        for message_id, index in self._messages.items():
            if message_id not in self._closed:
                content = self.response["output"][index]["content"]
                texts = {i: p["text"] for i, p in enumerate(content) if p.get("type") == "output_text"}
                events += self._close_message(message_id, texts, "completed")
        return events

    def _open_part(self, message_id: str, index: int, content_index: int) -> list[dict[str, Any]]:
        if content_index in self._parts[message_id]:
            return []
        self._parts[message_id].add(content_index)
        content = self.response["output"][index]["content"]
        while len(content) <= content_index:
            content.append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        return [self._event("response.content_part.added", item_id=message_id, output_index=index,
                            content_index=content_index, part=copy.deepcopy(content[content_index]))]

    def _step(self, name: str, step: dict[str, Any]) -> list[dict[str, Any]]:
        if name == "thread.run.step.delta":
            details = step.get("delta", {}).get("step_details") or {}
            events: list[dict[str, Any]] = []
            for call in details.get("tool_calls") or []:
                if call.get("type") == "function":
                    events += self._call_delta(step["id"], call)
                elif call.get("type") == "file_search" and call.get("id") and call["id"] not in self._builtin:
                    events += self._file_search_added(call["id"])
                elif call.get("type") == "code_interpreter":
                    events += self._code_delta(step["id"], call)
            return events
        if name != "thread.run.step.completed" or step.get("step_details", {}).get("type") != "tool_calls":
            return []
        events = []
        for position, call in enumerate(step["step_details"]["tool_calls"]):
            if call.get("type") != "function":
                continue
            if call["function"].get("output") is not None or (position > 0 and not self.response["parallel_tool_calls"]):
                continue  # answered by the server itself (a function that was not offered), or dropped
            events += self._call_delta(step["id"], {"index": position, "id": call["id"], "function": {
                "name": call["function"]["name"]}})
            index = self._calls[(step["id"], position)]
            item = self.response["output"][index]
            item["arguments"], item["status"] = call["function"].get("arguments") or "", "completed"
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                      arguments=item["arguments"], name=item["name"]))
            events.append(self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)))
        return events

    def _file_search_added(self, call_id: str) -> list[dict[str, Any]]:
        events = self._close_open_messages()
        index = len(self.response["output"])
        self._builtin[call_id] = index
        item: dict[str, Any] = {"id": function_item_id(call_id, "file_search"), "type": "file_search_call", "status": "in_progress",
                "queries": [], "results": None}
        self.response["output"].append(item)
        events.append(self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item)))
        events.append(self._event("response.file_search_call.in_progress", item_id=item["id"], output_index=index))
        item["status"] = "searching"
        events.append(self._event("response.file_search_call.searching", item_id=item["id"], output_index=index))
        return events

    def _code_added(self, call_id: str) -> list[dict[str, Any]]:
        events = self._close_open_messages()
        index = len(self.response["output"])
        self._builtin[call_id] = index
        item: dict[str, Any] = {"id": function_item_id(call_id, "code_interpreter"), "type": "code_interpreter_call",
                                "status": "in_progress", "code": "", "outputs": None,
                                "container_id": self._container_id or ""}
        self.response["output"].append(item)
        events.append(self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item)))
        events.append(self._event("response.code_interpreter_call.in_progress", item_id=item["id"],
                                  output_index=index))
        return events

    def _code_delta(self, step_id: str, call: dict[str, Any]) -> list[dict[str, Any]]:
        key = (step_id, int(call.get("index", 0)))
        if key not in self._ci_calls:
            if not call.get("id"):
                return []
            self._ci_calls[key] = call["id"]
        call_id = self._ci_calls[key]
        events = [] if call_id in self._builtin else self._code_added(call_id)
        index = self._builtin[call_id]
        item = self.response["output"][index]
        delta = str((call.get("code_interpreter") or {}).get("input") or "")
        if delta and item["status"] == "in_progress":
            item["code"] += delta
            events.append(self._event("response.code_interpreter_call_code.delta", item_id=item["id"],
                                      output_index=index, delta=delta))
        return events

    def _code_done(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        events = [] if data["id"] in self._builtin else self._code_added(data["id"])
        index = self._builtin[data["id"]]
        item = self.response["output"][index]
        code = str(data.get("code") or "")
        if code.startswith(item["code"]) and len(code) > len(item["code"]):  # what the deltas did not carry
            events.append(self._event("response.code_interpreter_call_code.delta", item_id=item["id"],
                                      output_index=index, delta=code[len(item["code"]):]))
        item["code"] = code
        self._container_files.update(data.get("files") or {})
        events.append(self._event("response.code_interpreter_call_code.done", item_id=item["id"],
                                  output_index=index, code=code))
        if data.get("status") == "incomplete":
            item["status"] = "incomplete"
        else:
            item["status"] = "interpreting"
            events.append(self._event("response.code_interpreter_call.interpreting", item_id=item["id"],
                                      output_index=index))
            item["status"] = "completed"
            events.append(self._event("response.code_interpreter_call.completed", item_id=item["id"],
                                      output_index=index))
        item["outputs"] = list(data.get("outputs") or []) if "code_interpreter_call.outputs" in self._include else None
        events.append(self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)))
        return events

    def _builtin_done(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if data.get("type") == "code_interpreter":
            return self._code_done(data)
        if data.get("type") != "file_search":
            return []
        events = [] if data["id"] in self._builtin else self._file_search_added(data["id"])
        index = self._builtin[data["id"]]
        item = self.response["output"][index]
        results = list(data.get("results") or [])
        self._filenames.update({r["file_id"]: r.get("filename") or "" for r in results})
        status = "incomplete" if data.get("status") == "incomplete" else "completed"
        item.update(status=status, queries=list(data.get("queries") or []),
                    results=results if "file_search_call.results" in self._include else None)
        if status == "completed":
            events.append(self._event("response.file_search_call.completed", item_id=item["id"], output_index=index))
        events.append(self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)))
        return events

    def _call_delta(self, step_id: str, call: dict[str, Any]) -> list[dict[str, Any]]:
        key = (step_id, int(call.get("index", 0)))
        if key[1] > 0 and not self.response["parallel_tool_calls"]:
            return []  # the engine keeps only a turn's first call then: never announce the others
        function = call.get("function") or {}
        events: list[dict[str, Any]] = []
        if key not in self._calls:
            if not call.get("id") or function.get("name") not in self._functions:
                return []  # a call to a function that was not offered: the engine answers it itself
            events += self._close_open_messages()
            index = len(self.response["output"])
            self._calls[key] = index
            item = {"id": function_item_id(call["id"]), "type": "function_call", "status": "in_progress",
                    "arguments": "", "call_id": call["id"], "name": function.get("name") or ""}
            self.response["output"].append(item)
            events.append(self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item)))
        index = self._calls[key]
        item = self.response["output"][index]
        delta = function.get("arguments") or ""
        if delta and item["status"] == "in_progress":
            item["arguments"] += delta
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=index, delta=delta))
        return events


async def replay(store: MetadataStore, run: dict[str, Any], include: list[str] | None = None) -> ResponseRenderer:
    """The renderer after the whole log so far (the response as it stands now)."""
    renderer = ResponseRenderer(run, include)
    after = 0
    while batch := await store.read_events(run["id"], after):
        for item in batch:
            after = item.seq
            renderer.feed(item.event, _data(item))
        if len(batch) < 1000:
            break
    renderer.response["metadata"] = run.get("metadata") or {}  # a client update after the last event
    return renderer


async def rendered(events: AsyncIterator[StoredEvent], renderer: ResponseRenderer) -> AsyncIterator[dict[str, Any]]:
    async for item in events:
        for out in renderer.feed(item.event, _data(item)):
            yield out
        if renderer.finished:
            return


def _data(item: StoredEvent) -> Any:
    return json.loads(item.data) if item.data.startswith("{") else item.data
