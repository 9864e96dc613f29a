"""Field limits OpenAI documents that no request schema of ours carries, per endpoint.

Message bodies are checked by the message service and vector store bodies by their own
schemas; the documented maxima they lack are applied here, at the edge, on the parsed body
(``spindle.api.common.json_body``), so every route that takes a message (a thread's
messages, a run's ``additional_messages``, create-thread-and-run's ``thread.messages``) gets
the same rule. Errors follow OpenAI's wording and code (``string_above_max_length``).

Sources: the Assistants API reference (message content 256,000 characters: the limit the
SDK's ``messages.create`` documents); the vector store name and description have no
documented maximum, so they get the assistant's (256 and 512) rather than none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from spindle.errors import InvalidRequestError

MESSAGE_CHARS = 256_000
NAME_CHARS = 256
DESCRIPTION_CHARS = 512

Rule = Callable[[Any, str], None]


def too_long(param: str, limit: int, length: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, but got a string "
        f"with length {length} instead.", param=param, code="string_above_max_length")


def text(limit: int) -> Rule:
    def rule(value: Any, param: str) -> None:
        if isinstance(value, str) and len(value) > limit:
            raise too_long(param, limit, len(value))
    return rule


def message(value: Any, param: str) -> None:
    """A message's text, as a string or as text parts, counts together against the limit."""
    if not isinstance(value, dict):
        return
    content = value.get("content")
    where = f"{param}.content" if param else "content"
    if isinstance(content, str):
        text(MESSAGE_CHARS)(content, where)
        return
    if not isinstance(content, list):
        return
    total = 0
    for i, part in enumerate(content):
        body = part.get("text") if isinstance(part, dict) else None
        if isinstance(body, str):
            total += len(body)
            if total > MESSAGE_CHARS:
                raise too_long(f"{where}[{i}].text", MESSAGE_CHARS, total)


def _each(path: str, data: Any) -> Iterator[tuple[Any, str]]:
    """The values at ``path`` ("a.b[*].c"; "" is the body itself) with their parameter names."""
    found: list[tuple[Any, str]] = [(data, "")]
    for step in [s for s in path.split(".") if s] if path else []:
        key, many = (step[:-3], True) if step.endswith("[*]") else (step, False)
        nxt: list[tuple[Any, str]] = []
        for value, name in found:
            if not isinstance(value, dict) or key not in value:
                continue
            child, child_name = value[key], f"{name}.{key}" if name else key
            if many:
                if isinstance(child, list):
                    nxt.extend((item, f"{child_name}[{i}]") for i, item in enumerate(child))
            else:
                nxt.append((child, child_name))
        found = nxt
    yield from found


# (method, route path under /v1) -> [(JSON path, rule)]; Azure paths are routed onto these.
LIMITS: dict[tuple[str, str], list[tuple[str, Rule]]] = {
    ("POST", "/threads"): [("messages[*]", message)],
    ("POST", "/threads/runs"): [("thread.messages[*]", message)],
    ("POST", "/threads/{thread_id}/messages"): [("", message)],
    ("POST", "/threads/{thread_id}/runs"): [("additional_messages[*]", message)],
    ("POST", "/vector_stores"): [("name", text(NAME_CHARS)), ("description", text(DESCRIPTION_CHARS))],
    ("POST", "/vector_stores/{store_id}"): [("name", text(NAME_CHARS))],
}


def check_limits(method: str, route_path: str, body: Any) -> None:
    """Raise a 400 naming the first field of ``body`` over its documented limit."""
    route_path = route_path.removeprefix("/v1")  # the path as the router declares it, prefix or not
    for path, rule in LIMITS.get((method, route_path), ()):
        for value, param in _each(path, body):
            rule(value, param)
