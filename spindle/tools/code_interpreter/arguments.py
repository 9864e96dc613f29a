"""The ``python`` function's arguments: ``{"code": "<python source>"}``, complete or streaming.

While the model streams its arguments, ``partial_code`` decodes as much of the ``code``
string as is certain: an escape cut in half by a chunk boundary (``\\``, ``\\u00``, the first
half of a surrogate pair) is held back until its end arrives, so the decoded prefix only ever
grows. Each call rescans the arguments, but with the C JSON decoder and one regex, so a long
cell streamed in many small chunks stays cheap.
"""

from __future__ import annotations

import json
import re

_START = re.compile(r'"code"\s*:\s*"')
# A JSON string body: runs of plain characters or complete two-character escapes.
_BODY = re.compile(r'(?:[^"\\]+|\\.)*', re.DOTALL)
# An unfinished \uXXXX at the end of the body (its backslash starts an escape: see callers).
_PARTIAL_UNICODE = re.compile(r"\\u[0-9a-fA-F]{0,3}\Z")
_DECODER = json.JSONDecoder(strict=False)  # models put raw newlines and tabs in strings


def _is_raw(arguments: str) -> bool:
    """Some models send the code itself rather than a JSON object."""
    stripped = arguments.lstrip()
    return bool(stripped) and not stripped.startswith("{")


def partial_code(arguments: str) -> str | None:
    """The decoded prefix of ``code`` in partial arguments; ``None`` before the value starts."""
    if _is_raw(arguments):
        return arguments
    start = _START.search(arguments)
    if start is None:
        return None
    raw = arguments[start.end() :]
    body = raw[: _BODY.match(raw).end()]  # type: ignore[union-attr]  # always matches
    partial = _PARTIAL_UNICODE.search(body)
    if partial is not None and _starts_escape(body, partial.start()):
        body = body[: partial.start()]
    try:
        text = _DECODER.decode('"' + body + '"')
    except json.JSONDecodeError:
        return None
    if text and "\ud800" <= text[-1] <= "\udbff":
        text = text[:-1]  # the low half of the pair is still on its way
    return text


def _starts_escape(body: str, index: int) -> bool:
    """Whether the backslash at ``index`` begins an escape (an even run of backslashes before it)."""
    run = 0
    while index - run - 1 >= 0 and body[index - run - 1] == "\\":
        run += 1
    return run % 2 == 0


class BadArguments(ValueError):
    """The model's arguments do not contain code; the message is written for the model."""


def parse_code(arguments: str) -> str:
    """The code of a complete call. Raises ``BadArguments``."""
    if _is_raw(arguments):
        return arguments
    try:
        value = _DECODER.decode(arguments.strip() or "{}")
    except json.JSONDecodeError as exc:
        raise BadArguments(
            f'The arguments were not valid JSON ({exc.msg} at position {exc.pos}). Call python with {{"code": "<python source>"}}.'
        ) from exc
    code = value.get("code") if isinstance(value, dict) else None
    if not isinstance(code, str):
        raise BadArguments(
            'The python tool takes {"code": "<python source>"}; "code" was missing or not a string.'
        )
    return code
