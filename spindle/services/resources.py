"""``tool_resources``: checking what a client attaches and storing it in one canonical form.

Stored form: ``{"code_interpreter": {"file_ids": [...]}, "file_search": {"vector_store_ids": [...]}}``
(only the tools present). v1's ``file_ids`` are mapped here: they feed Code Interpreter, and
File Search through a vector store made from them, as OpenAI's own v1 → v2 migration did.
"""

from __future__ import annotations

from typing import Any

from spindle.errors import InvalidRequestError, ServiceUnavailableError
from spindle.runtime import Runtime


def vector_stores_of(runtime: Runtime) -> Any | None:
    return runtime.extensions.get("vector_stores")


async def resolve_tool_resources(
    runtime: Runtime,
    project: str,
    raw: dict[str, Any] | None,
    *,
    tools: list[dict[str, Any]] | None,
    v1_file_ids: list[str] | None = None,
    for_thread: bool,
    param: str = "tool_resources",
) -> dict[str, Any]:
    """Validate the resources a client sent and return the canonical stored form.

    Side effect: vector stores requested through the ``vector_stores`` helper (and for v1
    ``file_ids`` with file_search) are created here, after every check has passed."""
    if raw is None:
        raw = {}
    from spindle.api.common import validate
    from spindle.schemas.common import ToolResources, dump

    raw = dump(validate(ToolResources, raw, prefix=f"{param}."))
    out: dict[str, Any] = {}
    ci = raw.get("code_interpreter") or {}
    ci_files = list(ci.get("file_ids") or [])
    if v1_file_ids:
        ci_files += [f for f in v1_file_ids if f not in ci_files]
    if ci_files:
        await runtime.files.require_all(project, ci_files, f"{param}.code_interpreter.file_ids")
        if len(ci_files) > 20:
            raise InvalidRequestError("At most 20 files can be attached to code_interpreter.",
                                      param=f"{param}.code_interpreter.file_ids", code="array_above_max_length")
    if ci_files or "code_interpreter" in raw:
        out["code_interpreter"] = {"file_ids": ci_files}

    fs = raw.get("file_search") or {}
    store_ids = list(fs.get("vector_store_ids") or [])
    helpers = list(fs.get("vector_stores") or [])
    if store_ids and helpers:
        raise InvalidRequestError("Pass either vector_store_ids or vector_stores, not both.",
                                  param=f"{param}.file_search", code="invalid_value")
    v1_search_files = v1_file_ids if v1_file_ids and _has_tool(tools, "file_search") and not store_ids else None
    extension = vector_stores_of(runtime)
    if store_ids:
        if extension is None:
            raise _file_search_unavailable(runtime)
        await extension.check_exists(project, store_ids)
    for i, helper in enumerate(helpers):
        await runtime.files.require_all(project, list(helper.get("file_ids") or []),
                                        f"{param}.file_search.vector_stores[{i}].file_ids")
    if helpers or v1_search_files:
        if extension is None:
            raise _file_search_unavailable(runtime)
        for helper in helpers:
            store_ids.append(await extension.create_for_thread(
                project, list(helper.get("file_ids") or []), helper.get("metadata"),
                chunking_strategy=helper.get("chunking_strategy"), thread_default_expiry=for_thread))
        if v1_search_files:
            store_ids.append(await extension.create_for_thread(project, list(v1_search_files), None,
                                                               thread_default_expiry=for_thread))
    if store_ids or "file_search" in raw:
        out["file_search"] = {"vector_store_ids": store_ids}
    return out


def merge_tool_resources(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A modify call replaces the resources of each tool it names and keeps the others."""
    merged = dict(current or {})
    merged.update(update)
    return merged


def _has_tool(tools: list[dict[str, Any]] | None, kind: str) -> bool:
    return any(t.get("type") == kind for t in tools or [])


def _file_search_unavailable(runtime: Runtime) -> ServiceUnavailableError:
    """The vector store service did not start here: a 503 naming why (logged at start)."""
    problem = runtime.extensions.get("vector_stores_problem", "it is not installed")
    return ServiceUnavailableError(f"File search is not available on this server: {problem}.",
                                   code="service_unavailable")
