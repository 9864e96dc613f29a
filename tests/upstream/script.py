"""The rule book of the scripted upstream: which reply answers which request.

A rule is a substring plus a list of replies. A request whose system/developer, user or tool
messages contain the substring consumes the rule's next reply; once the list is used up the
last reply repeats. Newer rules win over older ones. The book also keeps the log of request
bodies, so tests can assert what the server under test sent.

The book is shared between the server's event loop and (in-process use) the test thread, so
every access goes through one lock. It must never do I/O or sleep while holding it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Assistant messages are left out of matching on purpose: the echo reply repeats the user's
# words, so matching them would let a rule fire on its own (or the echo's) earlier output.
MATCHED_ROLES = frozenset({"system", "developer", "user", "tool"})
FINISH_REASONS = frozenset({"stop", "tool_calls", "length", "content_filter"})
REPLY_FIELDS = frozenset(
    {
        "content",
        "tool_calls",
        "chunk_chars",
        "delay_ms",
        "first_token_delay_ms",
        "finish_reason",
        "usage",
        "error",
        "hang",
    }
)
ERROR_FIELDS = frozenset({"status", "message", "type", "code", "param", "mid_stream"})
MAX_LOGGED_REQUESTS = 100_000

_TEMPLATE = re.compile(r"\{\{\s*(last_tool|last_user|marker:(\d+))\s*\}\}")
_MARKER = re.compile(r"【[^】]*】")


class ScriptError(ValueError):
    """A rule or reply posted to ``/_script`` is malformed (answered with 400)."""


@dataclass(frozen=True)
class ToolCallSpec:
    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    message: str
    type: str
    code: str | None
    param: str | None
    mid_stream: bool


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``content is None`` and no tool calls means "echo the user"."""

    content: str | None = None
    tool_calls: tuple[ToolCallSpec, ...] = ()
    chunk_chars: int = 4
    delay_ms: float | None = None
    first_token_delay_ms: float = 0.0
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    error: ErrorSpec | None = None
    hang: bool = False


@dataclass
class Rule:
    match: str
    replies: list[Reply]
    used: int = 0

    def next_reply(self) -> Reply:
        reply = self.replies[min(self.used, len(self.replies) - 1)]
        self.used += 1
        return reply


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
        }


@dataclass
class ScriptBook:
    """Rules and the request log, safe to use from any thread."""

    _rules: list[Rule] = field(default_factory=list)
    _log: deque[LoggedRequest] = field(default_factory=lambda: deque(maxlen=MAX_LOGGED_REQUESTS))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_rule(self, match: object, replies: object) -> None:
        """Register a rule; raises ``ScriptError`` if it is malformed (so any input is accepted here)."""
        if not isinstance(match, str):
            raise ScriptError("'match' must be a string")
        if not isinstance(replies, list) or not replies:
            raise ScriptError("'replies' must be a non-empty list")
        rule = Rule(match=match, replies=[parse_reply(r, i) for i, r in enumerate(replies)])
        with self._lock:
            self._rules.append(rule)

    def reply_for(self, messages: list[Any]) -> Reply | None:
        """Consume and return the reply of the newest matching rule, or None (echo)."""
        haystack = matchable_text(messages)
        with self._lock:
            for rule in reversed(self._rules):
                if rule.match in haystack:
                    return rule.next_reply()
        return None

    def log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._log.clear()


def parse_reply(raw: Any, index: int = 0) -> Reply:
    """Validate one reply object strictly, so a typo in a test fails loudly, not silently."""
    where = f"replies[{index}]"
    if not isinstance(raw, dict):
        raise ScriptError(f"{where} must be an object")
    unknown = set(raw) - REPLY_FIELDS
    if unknown:
        raise ScriptError(f"{where} has unknown fields {sorted(unknown)}; allowed: {sorted(REPLY_FIELDS)}")
    content = raw.get("content")
    if content is not None and not isinstance(content, str):
        raise ScriptError(f"{where}.content must be a string")
    chunk_chars = raw.get("chunk_chars", 4)
    if not isinstance(chunk_chars, int) or chunk_chars < 1:
        raise ScriptError(f"{where}.chunk_chars must be an integer >= 1")
    finish = raw.get("finish_reason")
    if finish is not None and finish not in FINISH_REASONS:
        raise ScriptError(f"{where}.finish_reason must be one of {sorted(FINISH_REASONS)}")
    usage = raw.get("usage")
    if usage is not None and not (
        isinstance(usage, dict) and all(isinstance(v, int) for v in usage.values())
    ):
        raise ScriptError(f"{where}.usage must be an object of integers")
    return Reply(
        content=content,
        tool_calls=tuple(
            _parse_tool_call(tc, f"{where}.tool_calls[{i}]")
            for i, tc in enumerate(raw.get("tool_calls") or [])
        ),
        chunk_chars=chunk_chars,
        delay_ms=_non_negative(raw.get("delay_ms"), f"{where}.delay_ms"),
        first_token_delay_ms=_non_negative(raw.get("first_token_delay_ms"), f"{where}.first_token_delay_ms")
        or 0.0,
        finish_reason=finish,
        usage=usage,
        error=_parse_error(raw["error"], f"{where}.error") if raw.get("error") is not None else None,
        hang=bool(raw.get("hang", False)),
    )


def _parse_tool_call(raw: Any, where: str) -> ToolCallSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ScriptError(f"{where} must be an object with a string 'name'")
    args = raw.get("arguments", "{}")
    if not isinstance(args, str):
        # Lenient for test authors: a dict is serialised the way a model would write it.
        args = json.dumps(args)
    call_id = raw.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise ScriptError(f"{where}.id must be a string")
    return ToolCallSpec(name=raw["name"], arguments=args, id=call_id)


def _parse_error(raw: Any, where: str) -> ErrorSpec:
    if not isinstance(raw, dict):
        raise ScriptError(f"{where} must be an object")
    unknown = set(raw) - ERROR_FIELDS
    if unknown:
        raise ScriptError(f"{where} has unknown fields {sorted(unknown)}; allowed: {sorted(ERROR_FIELDS)}")
    status = raw.get("status", 500)
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise ScriptError(f"{where}.status must be an HTTP error status (400-599)")
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    return ErrorSpec(
        status=status,
        message=str(raw.get("message", "The scripted upstream failed on purpose.")),
        type=str(raw.get("type", default_type)),
        code=raw.get("code"),
        param=raw.get("param"),
        mid_stream=bool(raw.get("mid_stream", False)),
    )


def _non_negative(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScriptError(f"{where} must be a number >= 0")
    return float(value)


def message_text(message: Any) -> str:
    """The text of a message's content, whether a string or a list of content parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def matchable_text(messages: list[Any]) -> str:
    # Joined with a separator no test will match across, so two messages never fuse into a hit.
    return "\x00".join(
        message_text(m) for m in messages if isinstance(m, dict) and m.get("role") in MATCHED_ROLES
    )


def last_text(messages: list[Any], role: str) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == role:
            return message_text(message)
    return ""


def render(template: str, messages: list[Any]) -> str:
    """Fill ``{{last_tool}}``, ``{{last_user}}`` and ``{{marker:K}}`` from the request's messages."""
    if "{{" not in template:
        return template
    markers = _MARKER.findall(
        "\n".join(message_text(m) for m in messages if isinstance(m, dict) and m.get("role") == "tool")
    )

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "last_tool":
            return last_text(messages, "tool")
        if name == "last_user":
            return last_text(messages, "user")
        k = int(match.group(2))
        # Visible rather than empty, so a test asserting on citations sees why it failed.
        return markers[k] if k < len(markers) else f"[no marker {k}]"

    return _TEMPLATE.sub(fill, template)
