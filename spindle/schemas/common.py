"""Request schemas shared by several endpoints: tools, tool resources, metadata, formats.

Tolerant in: unknown fields are accepted (and ignored); known fields are checked with the
same limits OpenAI documents, so a bad value is a 400 naming the parameter.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


def check_metadata(value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, dict):
        raise ValueError("metadata must be an object of string keys and string values")
    if len(value) > 16:
        raise ValueError("metadata can have at most 16 keys")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"metadata key '{key[:20]}...' is longer than 64 characters")
        if not isinstance(item, str):
            raise ValueError(f"metadata value for '{key}' must be a string")
        if len(item) > 512:
            raise ValueError(f"metadata value for '{key}' is longer than 512 characters")
    return value


Metadata = Annotated[dict[str, Any] | None, Field(default=None)]


class FunctionDef(Loose):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FUNCTION_NAME.match(value):
            raise ValueError("function names must be 1-64 characters of a-z, A-Z, 0-9, underscores and dashes")
        return value


class RankingOptions(Loose):
    ranker: Literal["auto", "default_2024_08_21", "default-2024-08-21", "none"] | None = None
    score_threshold: float | None = Field(default=None, ge=0, le=1)


class FileSearchOptions(Loose):
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    ranking_options: RankingOptions | None = None


class CodeInterpreterTool(Loose):
    type: Literal["code_interpreter"]


class FileSearchTool(Loose):
    type: Literal["file_search"]
    file_search: FileSearchOptions | None = None


class FunctionTool(Loose):
    type: Literal["function"]
    function: FunctionDef


Tool = Annotated[CodeInterpreterTool | FileSearchTool | FunctionTool, Field(discriminator="type")]


def normalize_tools(value: Any) -> Any:
    """v1's ``retrieval`` tool is ``file_search`` in v2."""
    if isinstance(value, list):
        return [{**t, "type": "file_search"} if isinstance(t, dict) and t.get("type") == "retrieval" else t
                for t in value]
    return value


class CodeInterpreterResources(Loose):
    file_ids: list[str] | None = Field(default=None, max_length=20)


class VectorStoreHelper(Loose):
    file_ids: list[str] | None = Field(default=None, max_length=10000)
    chunking_strategy: dict[str, Any] | None = None
    metadata: Metadata = None


class FileSearchResources(Loose):
    vector_store_ids: list[str] | None = Field(default=None, max_length=1)
    vector_stores: list[VectorStoreHelper] | None = Field(default=None, max_length=1)


class ToolResources(Loose):
    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


class JsonSchemaFormat(Loose):
    name: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormatObject(Loose):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_needed(self) -> ResponseFormatObject:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("'json_schema' is required when type is 'json_schema'")
        return self


ResponseFormat = Literal["auto"] | ResponseFormatObject


class AssistantFields(Loose):
    """Fields shared by assistant create/modify and run overrides."""

    model: str | None = Field(default=None, min_length=1, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256000)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_resources: ToolResources | None = None
    metadata: Metadata = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    file_ids: list[str] | None = Field(default=None, max_length=20)  # v1 shape

    _norm_tools = field_validator("tools", mode="before")(lambda cls, v: normalize_tools(v))
    _meta = field_validator("metadata", mode="before")(lambda cls, v: check_metadata(v))


def dump(model: BaseModel) -> dict[str, Any]:
    """The fields the client actually sent, as plain JSON data (aliases applied)."""
    return model.model_dump(exclude_unset=True, by_alias=True, mode="json")


class ThreadFields(Loose):
    messages: list[dict[str, Any]] | None = Field(default=None, max_length=32)
    tool_resources: ToolResources | None = None
    metadata: Metadata = None

    _meta = field_validator("metadata", mode="before")(lambda cls, v: check_metadata(v))
