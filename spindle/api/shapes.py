"""Render stored (v2-shaped) objects for the API shape the client speaks.

Clients of the v1 Assistants API (``OpenAI-Beta: assistants=v1``, Azure 2024-02-15-preview,
openai SDK <= 1.20) expect ``file_ids`` on assistants, messages and runs, and the
``retrieval`` tool instead of ``file_search``.
"""

from __future__ import annotations

from typing import Any

from spindle.api.context import ApiShape
from spindle.engine.private import strip_private


def render(obj: dict[str, Any], shape: ApiShape) -> dict[str, Any]:
    out = strip_private(obj)
    if shape == "v2":
        return out
    kind = out.get("object")
    if "tools" in out:
        out["tools"] = [{"type": "retrieval"} if t.get("type") == "file_search" else t for t in out["tools"] or []]
    if kind == "assistant":
        ci = (out.get("tool_resources") or {}).get("code_interpreter") or {}
        out["file_ids"] = list(obj.get("_file_ids") or ci.get("file_ids") or [])
    elif kind == "thread.message":
        out["file_ids"] = [a["file_id"] for a in out.get("attachments") or []]
    elif kind == "thread.run":
        out.setdefault("file_ids", [])
    return out


def render_list(items: list[dict[str, Any]], shape: ApiShape) -> list[dict[str, Any]]:
    return [render(item, shape) for item in items]
