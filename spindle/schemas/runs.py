"""Request schemas for runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from spindle.schemas.common import Loose, Metadata, ResponseFormat, Tool, check_metadata, normalize_tools


class TruncationStrategy(Loose):
    type: Literal["auto", "last_messages"]
    last_messages: int | None = Field(default=None, ge=1)


class ToolChoiceFunction(Loose):
    name: str


class ToolChoiceObject(Loose):
    type: Literal["function", "code_interpreter", "file_search", "retrieval"]
    function: ToolChoiceFunction | None = None


class RunFields(Loose):
    assistant_id: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)
    instructions: str | None = Field(default=None, max_length=256000)
    additional_instructions: str | None = Field(default=None, max_length=256000)
    additional_messages: list[dict[str, Any]] | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    metadata: Metadata = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None
    max_prompt_tokens: int | None = Field(default=None, ge=256)
    max_completion_tokens: int | None = Field(default=None, ge=16)
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None

    _norm_tools = field_validator("tools", mode="before")(lambda cls, v: normalize_tools(v))
    _meta = field_validator("metadata", mode="before")(lambda cls, v: check_metadata(v))


class ToolOutput(Loose):
    tool_call_id: str
    output: str | None = None


class SubmitToolOutputs(Loose):
    tool_outputs: list[ToolOutput]
    stream: bool | None = None


class ModifyMetadata(Loose):
    metadata: Metadata = None

    _meta = field_validator("metadata", mode="before")(lambda cls, v: check_metadata(v))
