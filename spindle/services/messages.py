"""Messages: content parts, attachments, and the rule that a thread with an active run
takes no new messages."""

from __future__ import annotations

from typing import Any

from spindle.errors import InvalidRequestError, NotFoundError
from spindle.ids import new_id, now
from spindle.runtime import Runtime
from spindle.store.base import Conflict, Delete, Put, Update

ACTIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")


def text_part(value: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def normalize_content(content: Any, param: str) -> list[dict[str, Any]]:
    """A string or a list of parts (text, image_file, image_url) → stored content parts."""
    if isinstance(content, str):
        return [text_part(content)]
    if not isinstance(content, list) or not content:
        raise InvalidRequestError(f"'{param}' must be a string or a non-empty array of content parts.",
                                  param=param, code="invalid_type")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(text_part(part["text"]))
        elif kind == "image_file" and isinstance(part.get("image_file"), dict) and part["image_file"].get("file_id"):
            parts.append({"type": "image_file", "image_file": {"file_id": part["image_file"]["file_id"],
                                                               "detail": part["image_file"].get("detail", "auto")}})
        elif kind == "image_url" and isinstance(part.get("image_url"), dict) and part["image_url"].get("url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]["url"],
                                                             "detail": part["image_url"].get("detail", "auto")}})
        else:
            raise InvalidRequestError(f"Invalid content part at '{param}[{i}]': expected a text, image_file or "
                                      "image_url part.", param=f"{param}[{i}]", code="invalid_value")
    return parts


def message_object(*, thread_id: str, role: str, content: list[dict[str, Any]],
                   attachments: list[dict[str, Any]] | None = None, metadata: dict[str, Any] | None = None,
                   assistant_id: str | None = None, run_id: str | None = None,
                   status: str = "completed") -> dict[str, Any]:
    created = now()
    return {
        "id": new_id("msg_"), "object": "thread.message", "created_at": created, "thread_id": thread_id,
        "status": status, "incomplete_details": None,
        "completed_at": created if status == "completed" else None, "incomplete_at": None,
        "role": role, "content": content, "assistant_id": assistant_id, "run_id": run_id,
        "attachments": attachments or [], "metadata": metadata or {},
    }


class MessageService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store

    async def prepare(self, project: str, thread_id: str, raw: dict[str, Any], param: str = "") -> dict[str, Any]:
        """Validate one message as sent by a client and build the object (not yet stored).

        Checks role, content, attachments and v1 ``file_ids``; files must exist."""
        def p(name: str) -> str:
            return f"{param}.{name}" if param else name

        role = raw.get("role")
        if role not in ("user", "assistant"):
            raise InvalidRequestError(f"Invalid value for '{p('role')}': expected 'user' or 'assistant'.",
                                      param=p("role"), code="invalid_value")
        if "content" not in raw:
            raise InvalidRequestError(f"Missing required parameter: '{p('content')}'.", param=p("content"),
                                      code="missing_required_parameter")
        content = normalize_content(raw["content"], p("content"))
        attachments = _attachments(raw.get("attachments"), p("attachments"))
        file_ids = raw.get("file_ids")
        if file_ids is not None:
            if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids) or len(file_ids) > 10:
                raise InvalidRequestError("'file_ids' must be an array of at most 10 file ids.", param=p("file_ids"),
                                          code="invalid_value")
            # v1 files were available to every tool; keep that meaning.
            attachments += [{"file_id": f, "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]}
                            for f in file_ids if f not in {a["file_id"] for a in attachments}]
        for i, attachment in enumerate(attachments):
            await self.runtime.files.require_all(project, [attachment["file_id"]], p(f"attachments[{i}]"))
        for part in content:
            if part["type"] == "image_file":
                await self.runtime.files.require_all(project, [part["image_file"]["file_id"]], p("content"))
        metadata = raw.get("metadata")
        from spindle.schemas.common import check_metadata

        try:
            check_metadata(metadata)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param=p("metadata"), code="invalid_value") from None
        return message_object(thread_id=thread_id, role=role, content=content, attachments=attachments,
                              metadata=metadata)

    async def get(self, project: str, thread_id: str, message_id: str) -> dict[str, Any]:
        obj = await self.store.get("message", message_id, project)
        if obj is None or obj["thread_id"] != thread_id:
            raise NotFoundError(f"No message found with id '{message_id}'.", param="message_id")
        return obj

    async def active_run(self, thread_id: str) -> dict[str, Any] | None:
        runs = await self.store.scan("run", {"status": list(ACTIVE_RUN_STATUSES)}, parent=thread_id)
        return runs[-1] if runs else None

    async def create(self, project: str, thread: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
        active = await self.active_run(thread["id"])
        if active is not None:
            raise InvalidRequestError(
                f"Can't add messages to {thread['id']} while a run {active['id']} is active.", param="thread_id")
        message = await self.prepare(project, thread["id"], raw)
        threads = self.runtime.extensions["threads"]
        ops = await threads.attachment_ops(project, thread, [message])
        await self.store.write([*ops, Put("message", message, project, parent=thread["id"])])
        return message

    async def modify(self, project: str, thread_id: str, message_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        obj = await self.get(project, thread_id, message_id)
        if metadata is None:
            return obj
        # Only the client's field: a run may be writing this message's content right now.
        try:
            await self.store.write([Update("message", message_id, fields={"metadata": metadata})])
        except Conflict:  # deleted meanwhile
            raise NotFoundError(f"No message found with id '{message_id}'.", param="message_id") from None
        return await self.get(project, thread_id, message_id)

    async def delete(self, project: str, thread_id: str, message_id: str) -> dict[str, Any]:
        await self.get(project, thread_id, message_id)
        await self.store.write([Delete("message", message_id)])
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}


def _attachments(raw: Any, param: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequestError(f"'{param}' must be an array.", param=param, code="invalid_type")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
            raise InvalidRequestError(f"'{param}[{i}].file_id' is required.", param=f"{param}[{i}].file_id",
                                      code="missing_required_parameter")
        tools = item.get("tools") or []
        cleaned = []
        for j, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            kind = "file_search" if kind == "retrieval" else kind
            if kind not in ("code_interpreter", "file_search"):
                raise InvalidRequestError(f"Invalid tool type at '{param}[{i}].tools[{j}]'.",
                                          param=f"{param}[{i}].tools[{j}].type", code="invalid_value")
            cleaned.append({"type": kind})
        out.append({"file_id": item["file_id"], "tools": cleaned})
    return out
