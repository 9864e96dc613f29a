"""Request schemas for the Responses and Conversations APIs (tolerant of unknown fields;
known ones checked with OpenAI's limits, so a bad value is a 400 naming its parameter)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from spindle.schemas.common import FunctionDef, Loose, Metadata, RankingOptions, check_metadata
from spindle.schemas.containers import NetworkPolicy

INCLUDE_VALUES = ("file_search_call.results", "code_interpreter_call.outputs")


class FunctionTool(FunctionDef):
    type: Literal["function"]


class FileSearchTool(Loose):
    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(min_length=1, max_length=2)
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    ranking_options: RankingOptions | None = None
    filters: dict[str, Any] | None = None  # checked by ResponseService._check (param names the field)


class AutoContainer(Loose):
    type: Literal["auto"]
    file_ids: list[str] | None = Field(default=None, max_length=1000)
    memory_limit: Literal["1g", "4g", "16g", "64g"] | None = None
    network_policy: NetworkPolicy | None = None


class CodeInterpreterTool(Loose):
    type: Literal["code_interpreter"]
    container: str | AutoContainer


Tool = Annotated[FunctionTool | FileSearchTool | CodeInterpreterTool, Field(discriminator="type")]


class FormatText(Loose):
    type: Literal["text"]


class FormatJsonObject(Loose):
    type: Literal["json_object"]


class FormatJsonSchema(Loose):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(Loose):
    format: FormatText | FormatJsonObject | FormatJsonSchema | None = Field(default=None, discriminator="type")


class ToolChoiceFunction(Loose):
    type: Literal["function"]
    name: str


class ToolChoiceHosted(Loose):
    type: Literal["file_search", "code_interpreter"]


class ConversationRef(Loose):
    id: str = Field(min_length=1)


class ResponseFields(Loose):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[Any] | None = None
    instructions: str | None = Field(default=None, max_length=256000)
    previous_response_id: str | None = Field(default=None, min_length=1)
    conversation: str | ConversationRef | None = None
    store: bool | None = None
    background: bool | None = None
    stream: bool | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | ToolChoiceHosted | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=16)
    max_tool_calls: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: TextConfig | None = None
    metadata: Metadata = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[Literal["file_search_call.results", "code_interpreter_call.outputs"]] | None = None
    user: str | None = Field(default=None, max_length=512)

    _meta = field_validator("metadata", mode="before")(lambda cls, v: check_metadata(v))

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        if isinstance(value, list):
            for i, tool in enumerate(value):
                kind = tool.get("type") if isinstance(tool, dict) else None
                if kind not in ("function", "file_search", "code_interpreter"):
                    raise ValueError(f"tools[{i}]: tool type '{kind}' is not supported by this server "
                                     "(supported: function, file_search, code_interpreter)")
        return value


class InputTokensFields(Loose):
    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = Field(default=None, max_length=256000)
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)


class ConversationFields(Loose):
    items: list[Any] | None = Field(default=None, max_length=20)
    metadata: Metadata = None

    _meta = field_validator("metadata", mode="before")(lambda cls, v: check_metadata(v))


class ConversationUpdate(Loose):
    metadata: Metadata = None

    _meta = field_validator("metadata", mode="before")(lambda cls, v: check_metadata(v))


class ItemsCreate(Loose):
    items: list[Any] = Field(min_length=1, max_length=20)
