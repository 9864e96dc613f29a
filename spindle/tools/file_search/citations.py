"""Citation markers: how results are labelled for the model and mapped back to files.

A result is shown as ``【{turn}:{i}†{filename}】`` (OpenAI's form): ``turn`` numbers the
file_search calls of the run, ``i`` the result within the call. Each call stores the map
``"turn:i" -> file_id`` in its step tool_call (private ``_citations``), so markers can be
resolved after a restart too. Lookup is by ``turn:i`` only, so a marker whose filename the
model garbled still resolves.
"""

from __future__ import annotations

import re
from typing import Any

MARKER = re.compile(r"【(\d+):(\d+)[^【】]{0,200}】")
_OPEN, _CLOSE = "【", "】"
# Text after an unclosed 【 longer than this is not a marker in progress (a stray bracket).
_MAX_PENDING = 240


def marker(turn: int, index: int, filename: str) -> str:
    safe = filename.replace(_OPEN, "").replace(_CLOSE, "")
    return f"{_OPEN}{turn}:{index}†{safe}{_CLOSE}"


def citation_map(calls: list[dict[str, Any]]) -> dict[str, str]:
    """``"turn:i" -> file_id`` from the run's completed file_search calls."""
    out: dict[str, str] = {}
    for call in calls:
        if call.get("type") == "file_search":
            out.update(call.get("_citations") or {})
    return out


def quote_map(calls: list[dict[str, Any]]) -> dict[str, str]:
    """``"turn:i" -> the cited chunk's text`` (v1 clients' ``file_citation.quote``)."""
    out: dict[str, str] = {}
    for call in calls:
        if call.get("type") == "file_search":
            out.update(call.get("_quotes") or {})
    return out


def find_citations(text: str, mapping: dict[str, str], quotes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    found = []
    for match in MARKER.finditer(text):
        key = f"{match.group(1)}:{match.group(2)}"
        file_id = mapping.get(key)
        if file_id is None:
            continue
        # The quote is stored for v1 clients; the v2 shape leaves it out (api.shapes).
        found.append({
            "type": "file_citation",
            "text": match.group(0),
            "start_index": match.start(),
            "end_index": match.end(),
            "file_citation": {"file_id": file_id, "quote": (quotes or {}).get(key, "")},
        })
    return found


def pending(text: str) -> int | None:
    """Index of a ``【`` not closed yet (a marker still streaming), else ``None``."""
    start = text.rfind(_OPEN)
    if start < 0 or _CLOSE in text[start:] or len(text) - start > _MAX_PENDING:
        return None
    return start
