"""Request checks that a real chat-completions backend makes, with OpenAI's wording.

The scripted upstream is only useful if it refuses what OpenAI refuses: a server under test
that sends a tool message nobody asked for, or ``tool_choice`` without ``tools``, must fail
here just as it would in production. Only checks we are sure OpenAI makes belong here; a
stricter-than-real check would fail correct servers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}


@dataclass(eq=False)
class ApiError(Exception):
    """An error answered with the OpenAI envelope."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validate_chat_request(body: Any, *, model_from_path: str | None = None) -> None:
    """Raise ``ApiError`` (400) for a body a real backend would refuse."""
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        )
    if not body.get("model") and not model_from_path:
        raise ApiError(
            400, "you must provide a model parameter", code="missing_required_parameter", param="model"
        )
    if "messages" not in body:
        raise ApiError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    messages = body["messages"]
    if not isinstance(messages, list):
        raise ApiError(
            400,
            f"Invalid type for 'messages': expected an array, but got {_type_name(messages)} instead.",
            param="messages",
            code="invalid_type",
        )
    if not messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    _check_messages(messages)
    _check_tools(body)
    _check_numbers(body)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise ApiError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )


def _check_messages(messages: list[Any]) -> None:
    pending: set[str] = set()  # tool_call_ids of the last assistant turn not yet answered
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(
                400,
                f"Invalid type for 'messages[{i}]': expected an object, but got {_type_name(message)} instead.",
                param=f"messages[{i}]",
                code="invalid_type",
            )
        role = message.get("role")
        if role not in ROLES:
            raise ApiError(
                400,
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        if role != "tool" and pending:
            raise _unanswered(pending, i)
        content = message.get("content")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                raise ApiError(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
            pending.discard(call_id)
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            if content is None and not calls and not message.get("function_call"):
                raise ApiError(
                    400,
                    "Invalid value for 'content': expected a string, got null.",
                    param=f"messages.[{i}].content",
                )
            ids = [c.get("id") if isinstance(c, dict) else None for c in calls]
            if not all(isinstance(call_id, str) for call_id in ids):
                raise ApiError(
                    400,
                    f"Missing required parameter: 'messages[{i}].tool_calls[0].id'.",
                    param=f"messages[{i}].tool_calls[0].id",
                    code="missing_required_parameter",
                )
            pending = {str(call_id) for call_id in ids}
        if role in ("system", "developer", "user", "tool") and not isinstance(content, str | list):
            raise ApiError(
                400,
                f"Invalid value for 'content': expected a string, got {_type_name(content)}.",
                param=f"messages.[{i}].content",
            )
    if pending:
        raise _unanswered(pending, len(messages))


def _unanswered(pending: set[str], index: int) -> ApiError:
    ids = ", ".join(sorted(pending))
    return ApiError(
        400,
        f"An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {ids}",
        param=f"messages.[{index}].role",
    )


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ApiError(
                400,
                f"Invalid type for 'tools': expected an array, but got {_type_name(tools)} instead.",
                param="tools",
                code="invalid_type",
            )
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise ApiError(
                    400,
                    f"Invalid value for 'tools[{i}].type': expected 'function'.",
                    param=f"tools[{i}].type",
                    code="invalid_value",
                )
            fn = tool.get("function")
            name = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                raise ApiError(
                    400,
                    f"Invalid 'tools[{i}].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    param=f"tools[{i}].function.name",
                    code="invalid_value",
                )
    if not tools:
        for param in ("tool_choice", "parallel_tool_calls"):
            if body.get(param) is not None:
                raise ApiError(
                    400,
                    f"Invalid value for '{param}': '{param}' is only allowed when 'tools' are specified.",
                    param=param,
                )


def _check_numbers(body: dict[str, Any]) -> None:
    for name, (low, high) in _RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(
                400,
                f"Invalid type for '{name}': expected a decimal, but got {_type_name(value)} instead.",
                param=name,
                code="invalid_type",
            )
        if not low <= value <= high:
            side = "below minimum" if value < low else "above maximum"
            bound = low if value < low else high
            raise ApiError(
                400,
                f"Invalid '{name}': decimal {side} value. Expected a value {'>=' if value < low else '<='} {bound:g}, but got {value} instead.",
                param=name,
                code="decimal_" + ("below_min_value" if value < low else "above_max_value"),
            )
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(
                400,
                f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
                param=name,
                code="invalid_type",
            )
        if value < 1:
            raise ApiError(
                400,
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
                param=name,
                code="integer_below_min_value",
            )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a decimal",
    }.get(type(value), type(value).__name__)
