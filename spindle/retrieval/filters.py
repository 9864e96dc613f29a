"""Attribute filters of ``POST /vector_stores/{id}/search`` and the file_search tool.

A filter is a comparison ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key", "value"}``
or a compound ``{"type": "and"|"or", "filters": [...]}``, evaluated against a file's
``attributes`` (string, number or boolean values). Semantics, chosen to be predictable:

- numbers compare with numbers, strings with strings (``gt`` etc. on strings is lexical),
  booleans only with booleans (``True`` never equals ``1``);
- a comparison on a missing key, or across types, is false - except ``ne`` and ``nin``,
  which are its negations and therefore true there.
"""

from __future__ import annotations

from typing import Any

_COMPARISONS = {"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"}
_COMPOUNDS = {"and", "or"}
_MAX_DEPTH = 16


class InvalidFilter(Exception):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def validate(filt: Any, param: str = "filters", depth: int = 0) -> dict[str, Any]:
    """Check a filter's shape; raise ``InvalidFilter`` naming the offending field."""
    if depth > _MAX_DEPTH:
        raise InvalidFilter("Filters are nested too deeply.", param)
    if not isinstance(filt, dict):
        raise InvalidFilter("A filter must be an object.", param)
    kind = filt.get("type")
    if kind in _COMPOUNDS:
        subs = filt.get("filters")
        if not isinstance(subs, list):
            raise InvalidFilter(f"A '{kind}' filter needs a 'filters' array.", f"{param}.filters")
        for i, sub in enumerate(subs):
            validate(sub, f"{param}.filters[{i}]", depth + 1)
        return filt
    if kind not in _COMPARISONS:
        raise InvalidFilter(
            "Filter type must be one of eq, ne, gt, gte, lt, lte, in, nin, and, or.", f"{param}.type"
        )
    if not isinstance(filt.get("key"), str):
        raise InvalidFilter("A comparison filter needs a string 'key'.", f"{param}.key")
    value = filt.get("value")
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(_scalar(v) for v in value):
            raise InvalidFilter(f"'{kind}' needs an array of strings or numbers as 'value'.", f"{param}.value")
    elif not _scalar(value):
        raise InvalidFilter("'value' must be a string, number or boolean.", f"{param}.value")
    return filt


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "other"


def _equal(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and a == b


def _compare(op: str, actual: Any, expected: Any) -> bool:
    kind = _kind(actual)
    if kind != _kind(expected) or kind not in ("number", "string"):
        return False
    if op == "gt":
        return bool(actual > expected)
    if op == "gte":
        return bool(actual >= expected)
    if op == "lt":
        return bool(actual < expected)
    return bool(actual <= expected)


def matches(filt: dict[str, Any], attributes: dict[str, Any]) -> bool:
    """Whether a file with ``attributes`` passes a (validated) filter."""
    kind = filt["type"]
    if kind == "and":
        return all(matches(sub, attributes) for sub in filt["filters"])
    if kind == "or":
        return any(matches(sub, attributes) for sub in filt["filters"])
    present = filt["key"] in attributes
    actual = attributes.get(filt["key"])
    expected = filt["value"]
    if kind == "eq":
        return present and _equal(actual, expected)
    if kind == "ne":
        return not (present and _equal(actual, expected))
    if kind == "in":
        return present and any(_equal(actual, v) for v in expected)
    if kind == "nin":
        return not (present and any(_equal(actual, v) for v in expected))
    return present and _compare(kind, actual, expected)
