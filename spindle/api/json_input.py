"""Parse a JSON request body without trusting it.

``json.loads`` accepts things that later break the server: lone UTF-16 surrogates
(``"\\ud800"`` is valid JSON syntax but not Unicode text: SQLite, the SDK and every response
encoder choke on it), nesting deep enough to exhaust the recursion limit, integers of
thousands of digits (``int()`` refuses them with a ValueError) and the non-JSON constants
``NaN``/``Infinity``. Each becomes a 400 naming the parameter (its JSON path, e.g.
``metadata.k`` or ``messages[0].content``) before any route or schema sees the data.
"""

from __future__ import annotations

import json
import re
from typing import Any

from spindle.errors import InvalidRequestError

# Far deeper than any request needs (a JSON schema in a function definition nests two levels
# per schema level, and OpenAI allows ten; a compound search filter, a handful), far
# shallower than the recursion limit (~1,000) of everything that walks the data later.
MAX_DEPTH = 100
# int64 and uint64 both fit; longer literals are never meaningful in this API.
MAX_INT_DIGITS = 20
# Keys and values in one body. A 3-byte token ("x",) becomes a ~60-byte Python object, so token
# count, not byte size, is what parsing costs; the largest real bodies (a 2,000-file batch with
# attributes, 128 tools with schemas) stay under 100,000.
MAX_TOKENS = 250_000

_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"')


class _Rejected:
    """Stands in for a number literal the parser hooks refused; the walk reports its path."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _parse_int(text: str) -> int | _Rejected:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Rejected(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS} are accepted)")
    return int(text)


def _parse_float(text: str) -> float | _Rejected:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return _Rejected("a number out of range")
    return value


def _parse_constant(text: str) -> _Rejected:
    return _Rejected(f"'{text}', which is not JSON")


def has_invalid_unicode(text: str) -> bool:
    """True when ``text`` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def _separators(raw: bytes, start: int = 0, end: int | None = None) -> int:
    return sum(raw.count(mark, start, end) for mark in (b",", b":", b"[", b"{"))


def count_tokens(raw: bytes, limit: int = MAX_TOKENS) -> int:
    """Keys and values in ``raw``, counted without parsing it: an upper bound, exact (for
    valid JSON) whenever it is above ``limit``.

    Counting every separator is a C-speed upper bound; only when that passes ``limit`` are the
    separators inside strings (a pasted document, code) taken off, string by string, stopping
    as soon as there are more strings than ``limit`` (then there are more tokens too)."""
    rough = _separators(raw) + 1
    if rough <= limit:
        return rough
    inside = 0
    for count, match in enumerate(_JSON_STRING.finditer(raw), start=1):
        if count > limit:
            return count
        inside += _separators(raw, match.start(), match.end())
    return rough - inside


def parse_json_body(raw: bytes) -> Any:
    """``raw`` as JSON data, or an ``InvalidRequestError`` naming what is wrong and where."""
    tokens = count_tokens(raw)
    if tokens > MAX_TOKENS:
        raise InvalidRequestError(
            f"The JSON body of your request has too many keys and values ({tokens:,}); at most {MAX_TOKENS:,} "
            "are accepted.", code="invalid_json")
    try:
        data = json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:
        raise InvalidRequestError(
            f"The JSON body of your request is nested too deeply: at most {MAX_DEPTH} levels are accepted.",
            code="invalid_json",
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(
            f"We could not parse the JSON body of your request ({exc}). The OpenAI API expects a JSON payload.",
            code="invalid_json",
        ) from None
    check_json_values(data)
    return data


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_json_values(data: Any) -> None:
    """Walk parsed JSON (iteratively: depth is what is being checked) and raise on the first
    lone surrogate, refused number or over-deep value, in document order."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if has_invalid_unicode(value):
                _fail(path, "is not valid Unicode: it contains a lone UTF-16 surrogate (such as \\ud800)",
                      "invalid_unicode")
        elif isinstance(value, _Rejected):
            _fail(path, f"is {value.why}", "invalid_value")
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                _fail(path, f"is nested too deeply: at most {MAX_DEPTH} levels are accepted", "invalid_value")
            if isinstance(value, dict):
                children: list[tuple[Any, str, int]] = []
                for key, item in value.items():
                    if has_invalid_unicode(key):
                        # The bad key itself must not be echoed: the error could not be encoded.
                        where = f"a key of '{path}'" if path else "a top-level key"
                        raise InvalidRequestError(
                            f"Invalid JSON body: {where} is not valid Unicode: it contains a lone UTF-16 "
                            "surrogate (such as \\ud800).", param=path or None, code="invalid_unicode")
                    children.append((item, _join(path, key), depth + 1))
            else:
                children = [(item, _join(path, i), depth + 1) for i, item in enumerate(value)]
            stack.extend(reversed(children))


def _fail(path: str, problem: str, code: str) -> None:
    if path:
        raise InvalidRequestError(f"Invalid value for '{path}': it {problem}.", param=path, code=code)
    raise InvalidRequestError(f"Invalid JSON body: it {problem}.", code=code)
