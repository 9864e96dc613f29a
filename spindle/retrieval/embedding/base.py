"""The embedder interface: chunk vectors for a document, query vectors for a search.

Implementations are blocking (call them from worker threads) and return float32 rows of
unit length, so inner product is cosine similarity. ``identity`` is recorded with every
index: vectors from different embedders are never mixed in one store.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from spindle.retrieval.chunker import Chunk


class EmbeddingError(Exception):
    """The embedder failed (remote API down, bad response). Ingestion reports ``server_error``."""


class ChunkVectors(np.ndarray):  # type: ignore[type-arg]
    """Chunk vectors (one unit row per chunk) that may also carry, per chunk, the unit vectors
    of the model windows it was embedded in (``windows[i]``: ``(n_i, dim)`` or ``None``).

    An array, so code that only wants chunk vectors is unchanged; the store keeps the windows
    so a long chunk can be scored by its best part without embedding it again."""

    windows: list[np.ndarray | None] | None

    def __array_finalize__(self, obj: Any) -> None:
        self.windows = getattr(obj, "windows", None) if obj is not None else None


def with_windows(vectors: np.ndarray, windows: list[np.ndarray | None]) -> ChunkVectors:
    out = vectors.view(ChunkVectors)
    out.windows = windows
    return out


def windows_of(vectors: np.ndarray) -> list[np.ndarray | None] | None:
    """The window vectors riding on ``vectors`` (``None`` for a plain array)."""
    windows = getattr(vectors, "windows", None)
    return windows if isinstance(windows, list) and len(windows) == len(vectors) else None


class Embedder(abc.ABC):
    #: e.g. ``"local:all-MiniLM-L6-v2"``; stored with each index
    identity: str
    dimensions: int

    @abc.abstractmethod
    def embed_chunks(self, text: str, chunks: list[Chunk]) -> np.ndarray:
        """One unit vector per chunk of ``text`` (shape ``(len(chunks), dimensions)``).

        Every chunk must be represented in full, not only its first model-sized window."""

    @abc.abstractmethod
    def embed_queries(self, queries: list[str]) -> np.ndarray:
        """One unit vector per query."""

    def close(self) -> None:  # noqa: B027 - optional hook, most embedders hold nothing
        """Release threads or connections."""


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: np.ndarray = (matrix / norms).astype(np.float32, copy=False)
    return out
