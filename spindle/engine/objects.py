"""Constructors for runs and run steps, and their status changes, in OpenAI's shapes."""

from __future__ import annotations

import time
from typing import Any

from spindle.ids import new_id, now

TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled", "expired", "incomplete")
ACTIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")
RUN_EXPIRY_S = 600


def new_run(*, thread_id: str, assistant: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    created = now()
    instructions = fields.get("instructions")
    if instructions is None:
        instructions = assistant.get("instructions") or ""
    if fields.get("additional_instructions"):
        instructions = f"{instructions}\n\n{fields['additional_instructions']}" if instructions else fields[
            "additional_instructions"]
    tools = fields["tools"] if fields.get("tools") is not None else assistant.get("tools") or []
    return {
        "id": new_id("run_"), "object": "thread.run", "created_at": created, "thread_id": thread_id,
        "assistant_id": assistant["id"], "status": "queued", "required_action": None, "last_error": None,
        "expires_at": created + RUN_EXPIRY_S, "started_at": None, "cancelled_at": None, "failed_at": None,
        "completed_at": None, "incomplete_details": None,
        "model": fields.get("model") or assistant["model"], "instructions": instructions, "tools": tools,
        "tool_resources": {}, "metadata": fields.get("metadata") or {}, "usage": None,
        "temperature": fields["temperature"] if fields.get("temperature") is not None else assistant.get("temperature", 1.0),
        "top_p": fields["top_p"] if fields.get("top_p") is not None else assistant.get("top_p", 1.0),
        "max_prompt_tokens": fields.get("max_prompt_tokens"),
        "max_completion_tokens": fields.get("max_completion_tokens"),
        "truncation_strategy": fields.get("truncation_strategy") or {"type": "auto", "last_messages": None},
        "response_format": fields["response_format"] if fields.get("response_format") is not None
        else assistant.get("response_format", "auto"),
        "tool_choice": fields.get("tool_choice") or "auto",
        "parallel_tool_calls": fields["parallel_tool_calls"] if fields.get("parallel_tool_calls") is not None else True,
        "reasoning_effort": fields.get("reasoning_effort") or assistant.get("reasoning_effort"),
        "_include": list(fields.get("_include") or []),
        "_queued_at": time.time(),
        # v1's run.file_ids: the files the assistant had (shown to v1 clients only).
        "file_ids": list(assistant.get("_file_ids") or
                         ((assistant.get("tool_resources") or {}).get("code_interpreter") or {}).get("file_ids") or []),
    }


def new_step(run: dict[str, Any], step_type: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("step_"), "object": "thread.run.step", "created_at": now(), "run_id": run["id"],
        "assistant_id": run["assistant_id"], "thread_id": run["thread_id"], "type": step_type,
        "status": "in_progress", "cancelled_at": None, "completed_at": None, "expired_at": None, "failed_at": None,
        "last_error": None, "step_details": details, "usage": None, "metadata": {},
    }


def finish_step(step: dict[str, Any], status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    step["status"] = status
    stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at", "failed": "failed_at"}
    if status in stamp:
        step[stamp[status]] = now()
    if error is not None:
        step["last_error"] = error
    return step


def set_run_status(run: dict[str, Any], status: str) -> dict[str, Any]:
    run["status"] = status
    if status == "queued":
        run["_queued_at"] = time.time()  # when any process may claim it (engine.leases)
    stamp = {"in_progress": "started_at", "completed": "completed_at", "cancelled": "cancelled_at",
             "failed": "failed_at"}
    if status in stamp and not (status == "in_progress" and run.get("started_at")):
        run[stamp[status]] = now()
    if status in TERMINAL_RUN_STATUSES:
        run["expires_at"] = None
        run["required_action"] = None
    return run


def add_usage(total: dict[str, int] | None, usage: dict[str, int]) -> dict[str, int]:
    total = dict(total or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    for key in ("prompt_tokens", "completion_tokens"):
        total[key] = total.get(key, 0) + int(usage.get(key, 0))
    total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
    return total
