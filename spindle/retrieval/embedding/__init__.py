"""Embedders: the local all-MiniLM-L6-v2 (default) and an OpenAI-compatible ``/embeddings`` client.

``get_embedder`` returns the one instance of the process; the local model loads lazily on
first use, so importing this package costs nothing.
"""

from __future__ import annotations

import threading

from spindle.retrieval.embedding.base import Embedder, EmbeddingError, normalize_rows
from spindle.retrieval.settings import RetrievalSettings

__all__ = ["Embedder", "EmbeddingError", "get_embedder", "normalize_rows"]

_lock = threading.Lock()
_instances: dict[tuple[object, ...], Embedder] = {}


def get_embedder(settings: RetrievalSettings) -> Embedder:
    """The process-wide embedder for these settings (remote when a base URL is set)."""
    if settings.embeddings_base_url:
        key: tuple[object, ...] = (
            "remote",
            settings.embeddings_base_url,
            settings.embeddings_model,
            settings.embeddings_dimensions,
        )
    else:
        key = ("local", settings.embed_model_dir, settings.embed_dtype, settings.embed_window_tokens)
    with _lock:
        found = _instances.get(key)
        if found is None:
            if key[0] == "remote":
                from spindle.retrieval.embedding.remote import RemoteEmbedder

                found = RemoteEmbedder(settings)
            else:
                from spindle.retrieval.embedding.local import LocalEmbedder

                found = LocalEmbedder(settings)
            _instances[key] = found
        return found
