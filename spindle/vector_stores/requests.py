"""Request bodies of the vector store endpoints, checked with OpenAI's limits.

Tolerant in (unknown fields are ignored), strict on known fields: a bad value is a 400 whose
``param`` names the field. Chunking strategies and filters are checked by the retrieval
library's own validators so the API and the library agree on the rules.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from spindle.api.common import validate
from spindle.errors import InvalidRequestError
from spindle.retrieval import filters as filter_rules
from spindle.retrieval.chunker import ChunkingStrategy, InvalidChunking
from spindle.schemas.common import Loose, Metadata, check_metadata
from spindle.vector_stores.objects import MAX_FILES_PER_BATCH, MAX_FILES_PER_STORE


def check_attributes(value: Any) -> Any:
    """Up to 16 keys of at most 64 characters; values are strings (≤ 512), numbers or booleans."""
    if value is None:
        return value
    if not isinstance(value, dict):
        raise ValueError("attributes must be an object")
    if len(value) > 16:
        raise ValueError("attributes can have at most 16 keys")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"attribute key '{key[:20]}...' is longer than 64 characters")
        if isinstance(item, str):
            if len(item) > 512:
                raise ValueError(f"attribute '{key}' is longer than 512 characters")
        elif not isinstance(item, bool | int | float):
            raise ValueError(f"attribute '{key}' must be a string, number or boolean")
    return value


class _Checked(Loose):
    """Runs the shared checks on ``metadata`` / ``attributes`` when a model has them."""

    @field_validator("metadata", check_fields=False)
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return check_metadata(value)

    @field_validator("attributes", check_fields=False)
    @classmethod
    def _attributes(cls, value: Any) -> Any:
        return check_attributes(value)


class ExpiresAfter(Loose):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


class CreateStore(_Checked):
    name: str | None = None
    description: str | None = None
    file_ids: list[str] | None = Field(default=None, max_length=MAX_FILES_PER_STORE)
    expires_after: ExpiresAfter | None = None
    chunking_strategy: dict[str, Any] | None = None
    metadata: Metadata = None


class ModifyStore(_Checked):
    name: str | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata = None


class CreateFile(_Checked):
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class UpdateFile(_Checked):
    attributes: dict[str, Any] | None


class BatchFile(_Checked):
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class CreateBatch(_Checked):
    file_ids: list[str] | None = None
    files: list[BatchFile] | None = None
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class SearchRanking(Loose):
    ranker: Literal["none", "auto", "default-2024-11-15", "default_2024_08_21", "default-2024-08-21"] = "auto"
    score_threshold: float = Field(default=0.0, ge=0, le=1)


class SearchRequest(Loose):
    query: str | list[str]
    rewrite_query: bool = False
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: SearchRanking | None = None


def chunking(value: Any, param: str = "chunking_strategy") -> ChunkingStrategy:
    try:
        return ChunkingStrategy.from_request(value, param)
    except InvalidChunking as exc:
        raise InvalidRequestError(exc.message, param=exc.param, code="invalid_value") from None


def search_filters(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        return filter_rules.validate(value)
    except filter_rules.InvalidFilter as exc:
        raise InvalidRequestError(exc.message, param=exc.param, code="invalid_value") from None


def batch_entries(body: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None, ChunkingStrategy]]:
    """``(file_id, attributes, chunking)`` for each file of a batch request."""
    request = validate(CreateBatch, body)
    if request.file_ids is not None and request.files is not None:
        raise InvalidRequestError("Pass either 'file_ids' or 'files', not both.", param="files",
                                  code="invalid_value")
    if request.file_ids is None and request.files is None:
        raise InvalidRequestError("Missing required parameter: 'file_ids'.", param="file_ids",
                                  code="missing_required_parameter")
    param = "file_ids" if request.file_ids is not None else "files"
    count = len(request.file_ids if request.file_ids is not None else request.files or [])
    if count == 0:
        raise InvalidRequestError(f"'{param}' must contain at least one file.", param=param,
                                  code="empty_array")
    if count > MAX_FILES_PER_BATCH:
        raise InvalidRequestError(
            f"A file batch can hold at most {MAX_FILES_PER_BATCH} files; got {count}.", param=param,
            code="array_above_max_length",
        )
    default = chunking(request.chunking_strategy)
    if request.file_ids is not None:
        return [(fid, request.attributes, default) for fid in request.file_ids]
    entries = []
    for i, item in enumerate(request.files or []):
        strategy = (chunking(item.chunking_strategy, f"files[{i}].chunking_strategy")
                    if item.chunking_strategy is not None else default)
        attributes = item.attributes if item.attributes is not None else request.attributes
        entries.append((item.file_id, attributes, strategy))
    return entries
