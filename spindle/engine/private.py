"""Stored objects may carry bookkeeping keys starting with ``_`` (e.g. a built-in tool call's
raw arguments, needed to rebuild the conversation). They never leave the server."""

from __future__ import annotations

from typing import Any


def strip_private(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_private(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(value, list):
        return [strip_private(v) for v in value]
    return value
