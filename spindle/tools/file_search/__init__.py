"""The ``file_search`` built-in tool; ``build(runtime)`` is its factory.

It needs the vector store service (``runtime.extensions["vector_stores"]``), which
``spindle.app`` builds before the tools; without it the tool is reported unavailable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spindle.tools.file_search.tool import FUNCTION_NAME, FileSearchTool

if TYPE_CHECKING:
    from spindle.runtime import Runtime

__all__ = ["FUNCTION_NAME", "FileSearchTool", "build"]


def build(runtime: Runtime) -> FileSearchTool:
    service = runtime.extensions.get("vector_stores")
    if service is None:
        problem = runtime.extensions.get("vector_stores_problem", "the vector store service is not running")
        raise RuntimeError(f"file_search needs vector stores: {problem}")
    return FileSearchTool(runtime, service)
