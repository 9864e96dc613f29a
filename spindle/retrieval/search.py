"""Hybrid search over one or more stores: BM25 + vectors, weighted RRF, rerank, threshold.

For every query and store, BM25 and vector candidates are fetched (60 each by default). All
ranked lists are fused with weighted reciprocal rank fusion (``w / (k + rank)``), which needs
no calibration between BM25 and cosine scores. Then the ranker:

- ``feedback`` (behind ``auto`` / ``default-*``): hybrid pseudo-relevance feedback. The query
  vector is moved towards the mean vector of the top fused chunks - the ones BM25 and the
  vectors agree on - and every candidate is rescored by its cosine to the moved query. On the
  bundled BEIR sets this beats keyword-only, vector-only and plain RRF (docs/file_search.md).
- ``none``: RRF order; the score is the fused RRF score normalised to [0, 1].

Scores are in [0, 1], so ``score_threshold`` means the same for every ranker. Blocking:
call ``search`` from a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spindle.retrieval.embedding import Embedder
from spindle.retrieval.index.store import StoreIndex
from spindle.retrieval.settings import RetrievalSettings


@dataclass
class SearchOptions:
    max_num_results: int = 10
    ranker: str = "auto"  # "none" skips the ranker; anything else uses settings.default_ranker
    score_threshold: float = 0.0
    filters: dict[str, Any] | None = None
    # Which candidate lists to fuse (the quality benchmark measures each alone).
    modes: tuple[str, ...] = ("keyword", "semantic")


@dataclass
class SearchHit:
    store_id: str
    file_id: str
    filename: str
    attributes: dict[str, Any]
    chunk_id: int
    seq: int
    text: str
    score: float


@dataclass
class _Candidate:
    store: int
    chunk_id: int
    rrf: float = 0.0


def _fuse(
    stores: Sequence[tuple[str, StoreIndex]],
    queries: list[str],
    query_vecs: np.ndarray | None,
    allowed: list[list[str] | None],
    options: SearchOptions,
    settings: RetrievalSettings,
) -> tuple[dict[tuple[int, int], _Candidate], float]:
    """Fused candidates keyed by ``(store index, chunk id)``, and the highest possible RRF score."""
    k_rrf, w_kw, w_sem = settings.rrf_k, settings.keyword_weight, settings.semantic_weight
    wanted = max(options.max_num_results * 2, 1)
    kw_k = max(settings.keyword_candidates, wanted)
    sem_k = max(settings.semantic_candidates, wanted)
    use_kw = "keyword" in options.modes and w_kw > 0
    use_sem = "semantic" in options.modes and w_sem > 0 and query_vecs is not None
    cands: dict[tuple[int, int], _Candidate] = {}

    def rank_list(hits: list[tuple[int, int, float]], weight: float, depth: int) -> None:
        hits.sort(key=lambda hit: -hit[2])  # several stores: one list by score
        for rank, (si, chunk_id, _) in enumerate(hits[:depth], start=1):
            cand = cands.setdefault((si, chunk_id), _Candidate(si, chunk_id))
            cand.rrf += weight / (k_rrf + rank)

    for qi, query in enumerate(queries):
        if use_kw:
            rank_list([(si, cid, score) for si, (_, index) in enumerate(stores)
                       for cid, score in index.keyword_search(query, kw_k, allowed[si])], w_kw, kw_k)
        if use_sem and query_vecs is not None:
            rank_list([(si, cid, score) for si, (_, index) in enumerate(stores)
                       for cid, score in index.vector_search(query_vecs[qi : qi + 1], sem_k, allowed[si])[0]],
                      w_sem, sem_k)
    weights = (w_kw if use_kw else 0.0) + (w_sem if use_sem else 0.0)
    return cands, len(queries) * weights / (k_rrf + 1)


def _feedback(
    stores: Sequence[tuple[str, StoreIndex]],
    ordered: list[_Candidate],
    query_vecs: np.ndarray,
    n_docs: int,
    weight: float,
) -> dict[tuple[int, int], float] | None:
    """Hybrid pseudo-relevance feedback: each query vector moves towards the mean vector of the
    top fused chunks (where BM25 and the vectors agree), then every candidate is scored by its
    cosine to the moved query (best over queries). ``None`` when vectors are unavailable."""
    by_store: dict[int, list[int]] = {}
    for cand in ordered:
        by_store.setdefault(cand.store, []).append(cand.chunk_id)
    vectors: dict[tuple[int, int], np.ndarray] = {}
    for si, ids in by_store.items():
        for cid, vec in stores[si][1].chunk_vectors(ids).items():
            if len(vec) == query_vecs.shape[1]:
                vectors[(si, cid)] = vec
    feedback = [vectors[(c.store, c.chunk_id)] for c in ordered[:n_docs] if (c.store, c.chunk_id) in vectors]
    if not vectors or not feedback:
        return None
    moved = query_vecs + weight * np.mean(feedback, axis=0)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    keys = list(vectors)
    cosines = np.max(np.stack([vectors[k] for k in keys]) @ moved.T, axis=1)
    return {key: float(score) for key, score in zip(keys, cosines, strict=True)}


def search(
    stores: Sequence[tuple[str, StoreIndex]],
    queries: list[str],
    embedder: Embedder | None,
    settings: RetrievalSettings,
    options: SearchOptions,
) -> list[SearchHit]:
    """The best chunks for ``queries`` across ``stores`` (blocking)."""
    queries = [q for q in queries if q.strip()]
    if not queries or not stores:
        return []
    need_vectors = embedder is not None and any(index.semantic_ok for _, index in stores)
    query_vecs = embedder.embed_queries(queries) if need_vectors and embedder is not None else None
    allowed = [index.allowed_files(options.filters) for _, index in stores]
    cands, top_rrf = _fuse(stores, queries, query_vecs, allowed, options, settings)
    ordered = sorted(cands.values(), key=lambda c: -c.rrf)
    ranker = settings.default_ranker if options.ranker != "none" else "none"
    reranked = None
    if ranker == "feedback" and query_vecs is not None and ordered:
        reranked = _feedback(stores, ordered, query_vecs, settings.feedback_docs, settings.feedback_weight)
    if reranked is not None:
        # candidates without a vector yet (file still embedding) keep their fused rank, below the rest
        scored = sorted(((reranked.get((c.store, c.chunk_id), 0.0), c) for c in ordered), key=lambda item: -item[0])
    else:
        scored = [(c.rrf / top_rrf if top_rrf > 0 else 0.0, c) for c in ordered]
    kept = [(min(max(s, 0.0), 1.0), c) for s, c in scored if s >= options.score_threshold]
    kept = kept[: options.max_num_results]
    return _materialise(stores, kept)


def _materialise(stores: Sequence[tuple[str, StoreIndex]], kept: list[tuple[float, _Candidate]]) -> list[SearchHit]:
    rows: dict[int, dict[int, Any]] = {}
    for si in {c.store for _, c in kept}:
        rows[si] = stores[si][1].chunk_rows([c.chunk_id for _, c in kept if c.store == si])
    hits: list[SearchHit] = []
    for score, cand in kept:
        row = rows[cand.store].get(cand.chunk_id)
        if row is None:  # deleted between search and fetch
            continue
        store_id, index = stores[cand.store]
        filename, attributes = index.file_names().get(row.file_id, ("", {}))
        hits.append(SearchHit(store_id, row.file_id, filename, attributes, cand.chunk_id, row.seq, row.text, score))
    return hits
