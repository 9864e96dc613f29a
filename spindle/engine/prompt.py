"""Builds the chat-completions conversation for one model turn of a run.

Rebuilt from the store every turn, so a run can continue in any process after a pause
(requires_action) or a restart: thread messages from before the run, then the run's own steps
in order (assistant text, tool calls and their outputs).
"""

from __future__ import annotations

import json
from typing import Any

# A rough size estimate (OpenAI's rule of thumb: ~4 characters a token); the upstream's own
# usage figures are what we report, this only decides truncation.
_CHARS_PER_TOKEN = 4
_AUTO_CONTEXT_TOKENS = 100_000


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(m.get("content") or "")) + len(json.dumps(m.get("tool_calls") or "")) + 16
               for m in messages) // _CHARS_PER_TOKEN


def message_to_chat(message: dict[str, Any]) -> dict[str, Any]:
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for part in message.get("content") or []:
        if part["type"] == "text":
            texts.append(part["text"]["value"])
        elif part["type"] == "image_url":
            images.append({"type": "image_url", "image_url": {"url": part["image_url"]["url"]}})
        elif part["type"] == "image_file":
            texts.append(f"[image file {part['image_file']['file_id']}]")
    text = "\n".join(texts)
    if images and message["role"] == "user":
        return {"role": "user", "content": [{"type": "text", "text": text}, *images]}
    return {"role": message["role"], "content": text}


def steps_to_chat(steps: list[dict[str, Any]], messages_by_id: dict[str, dict[str, Any]],
                  function_names: dict[str, str]) -> list[dict[str, Any]]:
    """The run's own progress: its messages and completed tool calls, in step order.

    ``function_names`` maps a built-in tool type to the function name it offers."""
    out: list[dict[str, Any]] = []
    for step in steps:
        details = step["step_details"]
        if details["type"] == "message_creation":
            message = messages_by_id.get(details["message_creation"]["message_id"])
            if message is not None:
                out.append(message_to_chat(message))
            continue
        calls = details.get("tool_calls") or []
        if not calls:
            continue
        chat_calls = []
        results = []
        for call in calls:
            kind = call["type"]
            if kind == "function":
                name, arguments = call["function"]["name"], call["function"].get("arguments") or "{}"
                output = call["function"].get("output")
            else:
                body = call.get(kind) or {}
                name = function_names.get(kind, kind)
                arguments = body.get("_arguments") or call.get("_arguments") or "{}"
                output = call.get("_output")
            chat_calls.append({"id": call["id"], "type": "function", "function": {"name": name, "arguments": arguments}})
            results.append({"role": "tool", "tool_call_id": call["id"], "content": output if output is not None else ""})
        out.append({"role": "assistant", "content": None, "tool_calls": chat_calls})
        out.extend(results)
    return out


def truncate(history: list[dict[str, Any]], strategy: dict[str, Any] | None, budget: int | None,
             fixed_tokens: int) -> list[dict[str, Any]]:
    """Apply ``truncation_strategy`` to the thread history (not to the run's own steps).
    ``disabled`` (a response's ``truncation: "disabled"``) sends everything: the upstream then
    refuses what does not fit its context window, and the response fails, as on OpenAI."""
    strategy = strategy or {"type": "auto"}
    if strategy.get("type") == "disabled":
        return history
    if strategy.get("type") == "last_messages" and strategy.get("last_messages"):
        history = history[-int(strategy["last_messages"]):]
    limit = (budget or _AUTO_CONTEXT_TOKENS) - fixed_tokens
    while len(history) > 1 and estimate_tokens(history) > limit:
        history = history[1:]
    return history
