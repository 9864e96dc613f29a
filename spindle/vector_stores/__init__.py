"""Vector stores: the service behind ``/v1/vector_stores`` and the hooks the core calls.

``build(runtime)`` is the factory ``spindle.app`` calls; the returned service is registered
as ``runtime.extensions["vector_stores"]`` and started/stopped with the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spindle.retrieval.settings import RetrievalSettings
from spindle.vector_stores.service import VectorStoreService

if TYPE_CHECKING:
    from spindle.runtime import Runtime

__all__ = ["VectorStoreService", "build"]


def build(runtime: Runtime) -> VectorStoreService:
    """Wire the service from settings (``runtime.settings.retrieval`` once composed)."""
    settings = getattr(runtime.settings, "retrieval", None) or RetrievalSettings()
    from spindle.retrieval import tokenizer

    tokenizer.load(settings.vocab_dir)  # fail at start, with the fix in the message, if setup was skipped
    return VectorStoreService(runtime, settings)
