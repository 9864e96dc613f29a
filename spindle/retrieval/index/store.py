"""One vector store's index on disk: chunk store (SQLite) + keyword (tantivy) + vectors (faiss).

Layout of ``<data_dir>/vector_stores/<vs_id>/``: ``chunks.sqlite``, ``keyword/``,
``vectors-<vgen>.faiss``. Adding a file touches only that file's rows, documents and vectors;
nothing is rebuilt. All methods block: call them from worker threads.

A file becomes keyword-searchable as soon as ``add_chunks`` returns, and semantically
searchable after ``add_vectors``. The embedder that wrote a store's vectors is recorded; a
store opened with a different embedder is searched by keyword only (and logs why) rather
than comparing vectors from two models.

The keyword index is derived data: a store whose keyword index was written with another
analyser version (``keyword.SCHEMA_VERSION``, e.g. one from before compound tokens) has it
rebuilt from the chunk store when opened, once; its vectors are kept as they are.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from spindle.retrieval import filters as filter_mod
from spindle.retrieval.chunker import Chunk
from spindle.retrieval.embedding.base import windows_of
from spindle.retrieval.index.base import join_chunks
from spindle.retrieval.index.chunkstore import ChunkRow, ChunkStore
from spindle.retrieval.index.keyword import SCHEMA_VERSION, KeywordIndex, RareTerms
from spindle.retrieval.index.vectors import VectorIndex
from spindle.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)

# Keyword commits of every store; commits of one store serialise and batch in KeywordIndex
# (where they also wait out COMMIT_GAP_S, so a few threads: one store waiting does not hold
# up the others).
_committer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spindle-kw-commit")


class StoreIndex:
    def __init__(self, directory: Path, settings: RetrievalSettings, embedder_identity: str, dim: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._settings = settings
        self.chunks = ChunkStore(directory / "chunks.sqlite")
        stale = self.chunks.get_meta("keyword_schema") != SCHEMA_VERSION
        self.keyword = KeywordIndex(directory / "keyword", fresh=stale)
        if stale:
            self._rebuild_keyword()
        recorded = self.chunks.get_meta("embedder")
        if recorded is None:
            self.chunks.set_meta("embedder", json.dumps({"identity": embedder_identity, "dim": dim}))
            recorded_identity, recorded_dim = embedder_identity, dim
        else:
            info = json.loads(recorded)
            recorded_identity, recorded_dim = info["identity"], int(info["dim"])
        self.semantic_ok = recorded_identity == embedder_identity
        if not self.semantic_ok:
            log.warning(
                "store %s was embedded with %s, not %s: keyword search only", directory.name,
                recorded_identity, embedder_identity,
            )
        self.dim = recorded_dim
        self.vectors = VectorIndex(
            directory, recorded_dim, self.chunks, settings.ivf_threshold, settings.ivf_nprobe,
            settings.snapshot_min_delta,
        )
        self._files_lock = threading.Lock()
        self._files_version = 0
        self._filter_cache: dict[str, tuple[int, list[str]]] = {}
        self._names: dict[str, tuple[str, dict[str, Any]]] | None = None
        self._closed = False

    def _rebuild_keyword(self) -> None:
        """Re-index every chunk's text (the keyword index is empty and of the current schema)."""
        count = 0
        for rows in self.chunks.iter_texts():
            by_file: dict[str, tuple[list[int], list[str]]] = {}
            for chunk_id, file_id, text in rows:
                ids, texts = by_file.setdefault(file_id, ([], []))
                ids.append(chunk_id)
                texts.append(text)
            for file_id, (ids, texts) in by_file.items():
                self.keyword.add(file_id, ids, texts)
            self.keyword.commit()
            count += len(rows)
        self.chunks.set_meta("keyword_schema", SCHEMA_VERSION)
        if count:
            log.info("store %s: keyword index rebuilt for the current analyser (%d chunks)", self.directory.name,
                     count)

    # -- ingestion -------------------------------------------------------------------------
    def add_chunks(
        self, file_id: str, filename: str, attributes: dict[str, Any], chunks: list[Chunk]
    ) -> tuple[list[int], Future[None]]:
        """Store a file's chunks (replacing any earlier copy). Returns the chunk ids and a
        future that completes when they are keyword-searchable; the commit runs on a
        committer thread so the caller can embed meanwhile."""
        self.delete_file(file_id, commit=False)
        rows = [(c.index, c.char_start, c.char_end, c.n_tokens, c.text) for c in chunks]
        ids = self.chunks.insert_file(file_id, filename, attributes, rows)
        ticket = self.keyword.add(file_id, ids, [c.text for c in chunks])
        self._touch_files()
        return ids, _committer.submit(self.keyword.commit, ticket)

    def add_vectors(self, file_id: str, chunk_ids: list[int], vectors: np.ndarray, usage_bytes: int) -> None:
        """Store a file's chunk vectors (and the window vectors riding on them, if any)."""
        windows = windows_of(vectors)
        plain = np.asarray(vectors, dtype=np.float32)
        present = np.asarray(self.chunks.store_vectors(file_id, chunk_ids, plain, usage_bytes, windows), dtype=bool)
        if self.semantic_ok and present.any():
            self.vectors.add(np.asarray(chunk_ids, dtype=np.int64)[present], plain[present])
            self.vectors.maybe_snapshot()

    def delete_file(self, file_id: str, commit: bool = True) -> bool:
        """Remove a file's chunks everywhere; returns whether it was present."""
        if self.chunks.file_info(file_id) is None:
            return False
        ids = self.chunks.delete_file(file_id)
        self.keyword.delete_file(file_id)
        if commit:
            self.keyword.commit()
        self.vectors.remove(ids)
        self._touch_files()
        return True

    def set_attributes(self, file_id: str, attributes: dict[str, Any]) -> None:
        self.chunks.set_attributes(file_id, attributes)
        self._touch_files()

    def _touch_files(self) -> None:
        with self._files_lock:
            self._files_version += 1
            self._filter_cache.clear()
            self._names = None

    # -- reads -----------------------------------------------------------------------------
    def file_names(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``file_id -> (filename, attributes)``, cached until a file changes."""
        with self._files_lock:
            if self._names is None:
                self._names = {fid: (name, attrs) for fid, name, attrs in self.chunks.files()}
            return self._names

    def allowed_files(self, filt: dict[str, Any] | None) -> list[str] | None:
        """File ids passing ``filt`` (``None`` = no restriction)."""
        if filt is None:
            return None
        key = json.dumps(filt, sort_keys=True)
        with self._files_lock:
            cached = self._filter_cache.get(key)
            version = self._files_version
        if cached is not None and cached[0] == version:
            return cached[1]
        allowed = [fid for fid, (_, attrs) in self.file_names().items() if filter_mod.matches(filt, attrs)]
        with self._files_lock:
            if len(self._filter_cache) > 64:
                self._filter_cache.clear()
            self._filter_cache[key] = (version, allowed)
        return allowed

    def terms(self, query: str) -> list[tuple[str, str]]:
        return self.keyword.terms(query)

    def word_terms(self, word: str) -> list[str]:
        return self.keyword.word_terms(word)

    def keyword_search(self, query: str, k: int, allowed_files: list[str] | None) -> list[tuple[int, float]]:
        return self.keyword.search(query, k, allowed_files)

    def vector_search(
        self, query_vecs: np.ndarray, k: int, allowed_files: list[str] | None
    ) -> list[list[tuple[int, float]]]:
        if not self.semantic_ok or query_vecs.shape[1] != self.dim:
            return [[] for _ in range(len(query_vecs))]
        allowed = None if allowed_files is None else self.chunks.chunk_ids_of(allowed_files)
        return self.vectors.search(query_vecs, k, allowed)

    def rare_terms(self, query: str, limit: int, allowed_files: list[str] | None,
                   only: set[tuple[str, str]] | None = None) -> RareTerms:
        return self.keyword.rare_terms(query, limit, allowed_files, only)

    def window_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Per chunk with a vector, its window vectors ``(n, dim)`` (its chunk vector if one window)."""
        if not self.semantic_ok:
            return {}
        return self.chunks.window_vectors(ids, self.dim)

    def num_chunks(self) -> int:
        return self.keyword.num_docs()

    def chunk_rows(self, ids: list[int]) -> dict[int, ChunkRow]:
        return self.chunks.chunks(ids)

    def chunk_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        if not self.semantic_ok:
            return {}
        return self.chunks.vectors(ids, self.dim)

    def file_content(self, file_id: str) -> str:
        """The file's parsed text, rebuilt from its overlapping chunks."""
        return join_chunks(self.chunks.file_chunks(file_id))

    def close(self) -> None:
        """Persist and release; idempotent. The index must not be used afterwards."""
        if self._closed:
            return
        self._closed = True
        self.vectors.maybe_snapshot(force=self.vectors.pending_changes > 0)
        self.keyword.close()
        self.chunks.close()
