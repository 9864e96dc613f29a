"""Response items: checking a request's ``input``, storing items in OpenAI's shapes, and
turning a list of items into the chat-completions messages the upstream model reads.

Everything in ``input`` comes from the client: each item is checked here (type, role,
content parts, sizes), and a bad one is a 400 naming ``input[i]...``.
"""

from __future__ import annotations

import json
from typing import Any

from spindle.errors import InvalidRequestError
from spindle.ids import new_id

MAX_INPUT_ITEMS = 2048
_ROLES = ("user", "assistant", "system", "developer")
# Chat-completions backends do not all know the "developer" role; it is the system prompt.
_CHAT_ROLE = {"developer": "system"}


def _bad(message: str, param: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _text_of(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _bad(f"Invalid type for '{param}': expected a string.", param, "invalid_type")
    return value


def _content(role: str, content: Any, param: str) -> list[dict[str, Any]]:
    """A message's content as stored: input parts for user/system/developer, output_text for
    the assistant (a client replaying an earlier answer)."""
    if isinstance(content, str):
        content = [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{param}': expected a string or an array of content parts.", param,
                   "invalid_type")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _bad(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = _text_of(part.get("text"), f"{where}.text")
            if role == "assistant":
                parts.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
            else:
                parts.append({"type": "input_text", "text": text})
        elif kind == "input_image" and role != "assistant":
            url, file_id = part.get("image_url"), part.get("file_id")
            if not isinstance(url, str) and not isinstance(file_id, str):
                raise _bad(f"'{where}' needs 'image_url' or 'file_id'.", where, "missing_required_parameter")
            parts.append({"type": "input_image", "image_url": url if isinstance(url, str) else None,
                          "file_id": file_id if isinstance(file_id, str) else None,
                          "detail": part.get("detail") if part.get("detail") in ("low", "high", "auto") else "auto"})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "refusal", "refusal": _text_of(part.get("refusal"), f"{where}.refusal")})
        else:
            raise _bad(f"Invalid value for '{where}.type': '{kind}' is not supported in a {role} message.",
                       f"{where}.type")
    return parts


def normalize_input(value: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as stored items (each with an id), or item references still
    to be resolved (``{"type": "item_reference", "id": ...}``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"id": new_id("msg_"), "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise _bad("Invalid type for 'input': expected a string or an array of items.", "input", "invalid_type")
    if len(value) > MAX_INPUT_ITEMS:
        raise _bad(f"Invalid 'input': at most {MAX_INPUT_ITEMS} items.", "input", "array_above_max_length")
    return [normalize_item(raw, f"input[{i}]") for i, raw in enumerate(value)]


def normalize_item(raw: Any, param: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    kind = raw.get("type", "message" if "role" in raw else None)
    if kind == "message":
        role = raw.get("role")
        if role not in _ROLES:
            raise _bad(f"Invalid value for '{param}.role': '{role}'. Supported values are: {list(_ROLES)}.",
                       f"{param}.role")
        return {"id": new_id("msg_"), "type": "message", "role": role, "status": "completed",
                "content": _content(role, raw.get("content"), f"{param}.content")}
    if kind == "function_call_output":
        call_id = _text_of(raw.get("call_id"), f"{param}.call_id")
        output = raw.get("output")
        if isinstance(output, list):  # content parts: the model reads their text
            output = "".join(str(p.get("text") or "") for p in output if isinstance(p, dict))
        return {"id": new_id("fco_"), "type": "function_call_output", "call_id": call_id,
                "output": _text_of(output, f"{param}.output"), "status": "completed"}
    if kind == "function_call":
        return {"id": raw.get("id") if isinstance(raw.get("id"), str) else new_id("fc_"), "type": "function_call",
                "call_id": _text_of(raw.get("call_id"), f"{param}.call_id"),
                "name": _text_of(raw.get("name"), f"{param}.name"),
                "arguments": _text_of(raw.get("arguments"), f"{param}.arguments"), "status": "completed"}
    if kind == "item_reference":
        return {"type": "item_reference", "id": _text_of(raw.get("id"), f"{param}.id"), "_param": param}
    raise _bad(f"Invalid value for '{param}.type': '{kind}'. Supported: message, function_call, "
               "function_call_output, item_reference.", f"{param}.type")


def _text(item: dict[str, Any]) -> str:
    out = []
    for part in item.get("content") or []:
        if part.get("type") in ("input_text", "output_text"):
            out.append(part["text"])
        elif part.get("type") == "refusal":
            out.append(part["refusal"])
        elif part.get("type") == "input_image" and part.get("file_id"):
            out.append(f"[image file {part['file_id']}]")
    return "\n".join(out)


def to_chat(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items in order → chat messages: a turn's function calls join one assistant message
    (with the text before them), their outputs follow as tool messages."""
    out: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            role = _CHAT_ROLE.get(item["role"], item["role"])
            images = [{"type": "image_url", "image_url": {"url": p["image_url"]}}
                      for p in item.get("content") or [] if p.get("type") == "input_image" and p.get("image_url")]
            if images and role == "user":
                out.append({"role": "user", "content": [{"type": "text", "text": _text(item)}, *images]})
            else:
                out.append({"role": role, "content": _text(item)})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":  # the same turn as the text before it
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": item.get("output") or ""})
    return out


def check_calls(items: list[dict[str, Any]], first_new: int) -> None:
    """Every function call needs its output, and every output a call before it; ``first_new``
    is where this request's own input starts (errors in it name ``input[i]``)."""
    calls: dict[str, int] = {}
    answered: set[str] = set()
    for position, item in enumerate(items):
        if item.get("type") == "function_call":
            calls[item["call_id"]] = position
        elif item.get("type") == "function_call_output":
            if item["call_id"] not in calls:
                param = f"input[{position - first_new}].call_id" if position >= first_new else "input"
                raise _bad(f"No tool call found for function call output with call_id {item['call_id']}.", param)
            answered.add(item["call_id"])
    missing = [call_id for call_id in calls if call_id not in answered]
    if missing:
        raise _bad(f"No tool output found for function call {missing[0]}.", "input")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
