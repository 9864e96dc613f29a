"""What search, ingestion and deletion need from one vector store's index.

Two implementations: ``StoreIndex`` (embedded: SQLite chunk store + tantivy + faiss in the
data dir, the default) and ``PgStoreIndex`` (everything in PostgreSQL, chosen when
``SPINDLE_DATABASE_URL`` is PostgreSQL, so any process can search any store). The fusion and
ranking code (``spindle.retrieval.search``) runs on top of either; the contract suite
``tests/retrieval/test_index_contract.py`` runs against both. All methods block: call them
from worker threads.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol

import numpy as np

from spindle.retrieval.chunker import Chunk
from spindle.retrieval.index.chunkstore import ChunkRow
from spindle.retrieval.index.keyword import RareTerms


class SearchIndex(Protocol):
    #: False when the store's vectors were written by another embedder: keyword search only.
    semantic_ok: bool
    dim: int

    # -- ingestion -------------------------------------------------------------------------
    def add_chunks(
        self, file_id: str, filename: str, attributes: dict[str, Any], chunks: list[Chunk]
    ) -> tuple[list[int], Future[None]]:
        """Store a file's chunks (replacing an earlier copy): their new ids, and a future that
        completes once they are keyword-searchable."""
        ...

    def add_vectors(self, file_id: str, chunk_ids: list[int], vectors: np.ndarray, usage_bytes: int) -> None:
        """Store the file's chunk vectors (and window vectors riding on them); vectors of chunks
        that no longer exist (file deleted or replaced meanwhile) go nowhere."""
        ...

    def delete_file(self, file_id: str) -> bool:
        """Remove a file's chunks everywhere; whether it was present."""
        ...

    def set_attributes(self, file_id: str, attributes: dict[str, Any]) -> None: ...

    # -- reads -----------------------------------------------------------------------------
    def file_names(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``file_id -> (filename, attributes)``."""
        ...

    def allowed_files(self, filt: dict[str, Any] | None) -> list[str] | None:
        """File ids passing the attribute filter (``None`` = no restriction)."""
        ...

    def terms(self, query: str) -> list[tuple[str, str]]:
        """``(field, term)`` of a query as the keyword index analyses it (field ``body``/``exact``)."""
        ...

    def word_terms(self, word: str) -> list[str]:
        """The ``body`` terms of one word."""
        ...

    def keyword_search(self, query: str, k: int, allowed_files: list[str] | None) -> list[tuple[int, float]]:
        """``(chunk id, BM25)`` best first."""
        ...

    def vector_search(
        self, query_vecs: np.ndarray, k: int, allowed_files: list[str] | None
    ) -> list[list[tuple[int, float]]]:
        """Per query vector, ``(chunk id, inner product)`` best first."""
        ...

    def rare_terms(self, query: str, limit: int, allowed_files: list[str] | None,
                   only: set[tuple[str, str]] | None = None) -> RareTerms:
        """Query terms (of ``only``) held by 1..``limit`` chunks of the store, and per chunk
        (of the allowed files) holding any, how many."""
        ...

    def window_vectors(self, ids: list[int]) -> dict[int, np.ndarray]: ...

    def chunk_vectors(self, ids: list[int]) -> dict[int, np.ndarray]: ...

    def chunk_rows(self, ids: list[int]) -> dict[int, ChunkRow]: ...

    def num_chunks(self) -> int: ...

    def file_content(self, file_id: str) -> str:
        """The file's parsed text, rebuilt from its overlapping chunks."""
        ...

    def close(self) -> None:
        """Release; idempotent."""
        ...


def join_chunks(parts: list[tuple[int, int, str]]) -> str:
    """A file's text from its chunks ``(char_start, char_end, text)`` in order (they overlap)."""
    out: list[str] = []
    covered = 0
    for start, end, text in parts:
        if end <= covered:
            continue
        out.append(text[max(0, covered - start) :])
        covered = end
    return "".join(out)
