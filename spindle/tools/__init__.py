"""Built-in tools, wired explicitly from settings (no dotted-path plugins).

Each built-in lives in its own package with a ``build(runtime)`` factory. A tool whose
dependencies are missing on this host is left out with a logged reason; runs that ask for it
then fail with that reason instead of running without it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spindle.runtime import Runtime
    from spindle.tools.base import BuiltinTool

log = logging.getLogger(__name__)


def build_tools(runtime: Runtime) -> tuple[dict[str, BuiltinTool], dict[str, str]]:
    """Returns the tools that could be built, and why the others could not."""
    tools: dict[str, BuiltinTool] = {}
    problems: dict[str, str] = {}
    try:
        from spindle.tools import code_interpreter

        tools["code_interpreter"] = code_interpreter.build(runtime)
    except Exception as exc:  # reported at start; the rest of the server works without it
        log.exception("built-in tool code_interpreter could not be built; runs that use it will fail")
        problems["code_interpreter"] = f"{type(exc).__name__}: {exc}"
    try:
        from spindle.tools import file_search

        tools["file_search"] = file_search.build(runtime)
    except Exception as exc:
        log.exception("built-in tool file_search could not be built; runs that use it will fail")
        problems["file_search"] = f"{type(exc).__name__}: {exc}"
    return tools, problems
