"""Render stored objects and stream events for the API shape the client speaks.

The store keeps a superset of both shapes (v2 objects plus the few fields only v1 has: a
run's ``file_ids``, a file citation's ``quote``); every response and every streamed event
passes through here, so REST and SSE always agree.

Clients of the v1 Assistants API (``OpenAI-Beta: assistants=v1``, Azure 2024-02-15-preview,
openai SDK <= 1.20) expect ``file_ids`` on assistants, messages and runs, the ``retrieval``
tool (in tools, tool_choice and run step tool calls) instead of ``file_search``, and a
``quote`` in every ``file_citation``. v2 clients see none of those.
"""

from __future__ import annotations

import json
from typing import Any

from spindle.api.context import ApiShape
from spindle.engine.private import strip_private

# Fields stored for v1 clients only.
_V1_ONLY = {"thread.run": ("file_ids",)}


def render(obj: dict[str, Any], shape: ApiShape) -> dict[str, Any]:
    out = strip_private(obj)
    kind = out.get("object")
    if shape == "v2":
        for key in _V1_ONLY.get(str(kind), ()):
            out.pop(key, None)
        _citations(out, keep_quote=False)
        return out
    if "tools" in out:
        out["tools"] = [_v1_tool(t) for t in out["tools"] or []]
    if isinstance(out.get("tool_choice"), dict):
        out["tool_choice"] = _v1_tool(out["tool_choice"])
    if kind == "assistant":
        ci = (out.get("tool_resources") or {}).get("code_interpreter") or {}
        out["file_ids"] = list(obj.get("_file_ids") or ci.get("file_ids") or [])
    elif kind == "thread.message":
        out["file_ids"] = [a["file_id"] for a in out.get("attachments") or []]
    elif kind == "thread.run":
        out.setdefault("file_ids", [])
    elif kind in ("thread.run.step", "thread.run.step.delta"):
        details = out.get("step_details") if kind == "thread.run.step" else (out.get("delta") or {}).get("step_details")
        if isinstance(details, dict) and details.get("type") == "tool_calls":
            details["tool_calls"] = [_v1_call(c) for c in details.get("tool_calls") or []]
    _citations(out, keep_quote=True)
    return out


def render_list(items: list[dict[str, Any]], shape: ApiShape) -> list[dict[str, Any]]:
    return [render(item, shape) for item in items]


def render_event_data(data: str, shape: ApiShape) -> str:
    """One stored event's JSON, as the client's shape shows it (``[DONE]`` and such pass)."""
    if not data.startswith("{") or (shape == "v2" and '"file_ids"' not in data and '"quote"' not in data):
        return data  # nothing shape-specific inside: no parsing on the hot path
    obj = json.loads(data)
    if not isinstance(obj, dict):
        return data
    return json.dumps(render(obj, shape), separators=(",", ":"))


def _v1_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "retrieval"} if tool.get("type") == "file_search" else tool


def _v1_call(call: dict[str, Any]) -> dict[str, Any]:
    """A v2 ``file_search`` step tool call (or its delta) is v1's ``retrieval`` call."""
    if call.get("type") != "file_search":
        return call
    shown = {k: v for k, v in call.items() if k not in ("type", "file_search")}
    return {**shown, "type": "retrieval", "retrieval": {}}


def _citations(obj: dict[str, Any], keep_quote: bool) -> None:
    """v1's ``file_citation`` has a required ``quote``; v2's has none."""
    content = obj.get("content")
    if content is None and isinstance(obj.get("delta"), dict):
        content = obj["delta"].get("content")
    for part in content or []:
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, dict):
            continue
        for note in text.get("annotations") or []:
            citation = note.get("file_citation") if isinstance(note, dict) else None
            if not isinstance(citation, dict):
                continue
            if keep_quote:
                citation.setdefault("quote", "")
            else:
                citation.pop("quote", None)
