"""Turning a request plus a scripted reply into OpenAI ``chat.completion`` objects and chunks.

Pure functions, no I/O and no timing: the HTTP layer decides when each chunk is sent. The
chunk sequence copies what OpenAI streams: a first delta carrying the role, text in small
pieces, each tool call opened by a delta with ``id``/``type``/``name`` and continued by
index-keyed ``arguments`` fragments, an empty delta carrying ``finish_reason``, and, when
``stream_options.include_usage`` is set, ``"usage": null`` on every chunk and a last chunk
with no choices and the usage.
"""

from __future__ import annotations

import math
import secrets
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .script import Reply, last_text, message_text, render

CHARS_PER_TOKEN = 4
SYSTEM_FINGERPRINT = "fp_scripted"
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """Everything one answer contains, fixed before the first byte is sent."""

    id: str
    created: int
    model: str
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    usage: dict[str, int]
    chunk_chars: int


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: one token per four characters."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def plan_completion(body: dict[str, Any], reply: Reply | None, model: str) -> Completion:
    """Decide the answer to ``body``: the scripted ``reply``, or the echo when it is None."""
    messages: list[Any] = body["messages"]
    reply = reply or Reply()
    content = reply.content
    if content is None and not reply.tool_calls:
        content = "You said: " + last_text(messages, "user")
    elif content is not None:
        content = render(content, messages)
    tool_calls = tuple(
        ToolCall(spec.id or new_id("call_"), spec.name, render(spec.arguments, messages))
        for spec in reply.tool_calls
    )
    finish = reply.finish_reason or ("tool_calls" if tool_calls else "stop")

    # A real backend cuts the answer at the token limit; only when the script leaves it open.
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if reply.finish_reason is None and isinstance(limit, int) and content and count_tokens(content) > limit:
        content, tool_calls, finish = content[: limit * CHARS_PER_TOKEN], (), "length"

    completion_tokens = count_tokens(content or "") + sum(
        count_tokens(tc.name + tc.arguments) for tc in tool_calls
    )
    prompt_tokens = sum(count_tokens(message_text(m)) + 4 for m in messages) + count_tokens(
        str(body.get("tools") or "")
    )
    override = reply.usage or {}
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, **override}
    if "total_tokens" not in override:
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return Completion(
        id=new_id("chatcmpl-", 29),
        created=int(time.time()),
        model=model,
        content=content,
        tool_calls=tool_calls,
        finish_reason=finish,
        usage=usage,
        chunk_chars=reply.chunk_chars,
    )


def completion_object(c: Completion) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": c.content, "refusal": None}
    if c.tool_calls:
        message["tool_calls"] = [
            {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}
            for tc in c.tool_calls
        ]
    return {
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": c.finish_reason}],
        "usage": c.usage,
    }


def stream_chunks(c: Completion, *, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return body

    role_sent = False
    if c.content is not None or not c.tool_calls:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        role_sent = True
        for piece in split(c.content or "", c.chunk_chars):
            yield chunk({"content": piece})
    for index, tc in enumerate(c.tool_calls):
        opening: dict[str, Any] = {
            "tool_calls": [
                {
                    "index": index,
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": ""},
                }
            ]
        }
        if not role_sent:
            # OpenAI folds the role into the first tool-call delta when there is no text.
            opening = {"role": "assistant", "content": None, **opening, "refusal": None}
            role_sent = True
        yield chunk(opening)
        for piece in split(tc.arguments, c.chunk_chars):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, c.finish_reason)
    if include_usage:
        yield {
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [],
            "usage": c.usage,
        }


def split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def piece_count(c: Completion) -> int:
    """How many content/argument chunks the answer streams (paces the non-streaming delay)."""
    return len(split(c.content or "", c.chunk_chars)) + sum(
        len(split(tc.arguments, c.chunk_chars)) + 1 for tc in c.tool_calls
    )
