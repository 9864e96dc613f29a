"""The ``code_interpreter`` built-in tool; ``build(runtime)`` is its factory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spindle.engine.leases import process_owner
from spindle.sandbox import SandboxSettings, SessionManager, build_provider
from spindle.tools.code_interpreter.ownership import SessionOwnership
from spindle.tools.code_interpreter.tool import FUNCTION_NAME, CodeInterpreterTool

if TYPE_CHECKING:
    from spindle.runtime import Runtime

__all__ = ["FUNCTION_NAME", "CodeInterpreterTool", "build"]


def build(runtime: Runtime) -> CodeInterpreterTool:
    """Wire the tool from settings: provider -> session manager -> tool.

    The manager is also registered as ``runtime.extensions["sandbox"]`` for other subsystems
    (health checks, admin). Sessions start in ``tool.start()``, not here."""
    settings = getattr(runtime.settings, "sandbox", None) or SandboxSettings()
    provider = build_provider(settings, protected_paths=[Path(runtime.settings.data_dir)])
    manager = SessionManager(provider, settings)
    ownership = None
    store = getattr(runtime, "store", None)
    if store is not None:
        ownership = SessionOwnership(store, process_owner(), runtime.settings.server.run_lease_s)
    extensions = getattr(runtime, "extensions", None)
    if isinstance(extensions, dict):
        extensions["sandbox"] = manager
        extensions["code_interpreter_sessions"] = ownership  # the run engine's affinity reads it
    return CodeInterpreterTool(runtime, manager, settings, ownership)
