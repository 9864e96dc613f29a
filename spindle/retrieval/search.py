"""Hybrid search over one or more stores: BM25 + vectors, weighted RRF, rerank, threshold.

For every query and store, BM25 and vector candidates are fetched. All ranked lists are fused
with weighted reciprocal rank fusion (``w / (k + rank)``), which needs no score calibration
between BM25 and cosine. The fused head then goes through the ranker:

- ``score_blend`` (default for ``auto`` / ``default-*``): rescoring by a convex blend of the
  exact cosine similarity and BM25 normalised by the best BM25 of that query. It uses the
  scores RRF throws away; on the bundled BEIR sets it beats RRF order (docs/file_search.md).
- ``none``: RRF order, score = fused RRF score normalised to [0, 1].

Scores are in [0, 1], so ``score_threshold`` means the same for every ranker. Blocking:
call ``search`` from a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spindle.retrieval.embedding import Embedder
from spindle.retrieval.index.store import StoreIndex
from spindle.retrieval.settings import RetrievalSettings

RANKERS = ("auto", "none", "default-2024-11-15", "default_2024_08_21")


@dataclass
class SearchOptions:
    max_num_results: int = 10
    ranker: str = "auto"
    score_threshold: float = 0.0
    filters: dict[str, Any] | None = None
    # Fusion weights; ``None`` = the settings' values (benchmarks override them).
    keyword_weight: float | None = None
    semantic_weight: float | None = None
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
    bm25: dict[int, float] = field(default_factory=dict)  # query index -> raw BM25


def _fuse(
    stores: Sequence[tuple[str, StoreIndex]],
    queries: list[str],
    query_vecs: np.ndarray | None,
    allowed: list[list[str] | None],
    options: SearchOptions,
    settings: RetrievalSettings,
) -> tuple[dict[tuple[int, int], _Candidate], list[float], float]:
    """Fused candidates, the best BM25 per query, and the highest possible RRF score."""
    k_rrf = settings.rrf_k
    w_kw = settings.keyword_weight if options.keyword_weight is None else options.keyword_weight
    w_sem = settings.semantic_weight if options.semantic_weight is None else options.semantic_weight
    wanted = max(options.max_num_results * 2, 1)
    kw_k = max(settings.keyword_candidates, wanted)
    sem_k = max(settings.semantic_candidates, wanted)
    cands: dict[tuple[int, int], _Candidate] = {}
    best_bm25 = [0.0] * len(queries)

    def rank_list(hits: list[tuple[int, int, float]], weight: float, qi: int | None) -> None:
        for rank, (si, chunk_id, score) in enumerate(hits, start=1):
            cand = cands.setdefault((si, chunk_id), _Candidate(si, chunk_id))
            cand.rrf += weight / (k_rrf + rank)
            if qi is not None:
                cand.bm25[qi] = score

    for qi, query in enumerate(queries):
        if "keyword" in options.modes and w_kw > 0:
            kw_hits = [
                (si, cid, score)
                for si, (_, index) in enumerate(stores)
                for cid, score in index.keyword_search(query, kw_k, allowed[si])
            ]
            kw_hits.sort(key=lambda hit: -hit[2])
            if kw_hits:
                best_bm25[qi] = kw_hits[0][2]
            rank_list(kw_hits[:kw_k], w_kw, qi)
        if "semantic" in options.modes and w_sem > 0 and query_vecs is not None:
            sem_hits = [
                (si, cid, score)
                for si, (_, index) in enumerate(stores)
                for cid, score in index.vector_search(query_vecs[qi : qi + 1], sem_k, allowed[si])[0]
            ]
            sem_hits.sort(key=lambda hit: -hit[2])
            rank_list(sem_hits[:sem_k], w_sem, None)
    weights = (w_kw if "keyword" in options.modes else 0.0) + (w_sem if "semantic" in options.modes else 0.0)
    return cands, best_bm25, len(queries) * weights / (k_rrf + 1)


def _blend(
    stores: Sequence[tuple[str, StoreIndex]],
    pool: list[_Candidate],
    query_vecs: np.ndarray | None,
    best_bm25: list[float],
    alpha: float,
) -> dict[tuple[int, int], float]:
    """``alpha * cosine + (1 - alpha) * bm25 / best_bm25``, best over the queries."""
    cos: dict[tuple[int, int], float] = {}
    if query_vecs is not None:
        by_store: dict[int, list[int]] = {}
        for cand in pool:
            by_store.setdefault(cand.store, []).append(cand.chunk_id)
        for si, ids in by_store.items():
            vectors = stores[si][1].chunk_vectors(ids)
            for cid, vec in vectors.items():
                if len(vec) == query_vecs.shape[1]:
                    cos[(si, cid)] = float(np.max(query_vecs @ vec))
    if not cos:
        alpha = 0.0  # nothing to blend with (keyword-only stores): pure normalised BM25
    scores: dict[tuple[int, int], float] = {}
    for cand in pool:
        key = (cand.store, cand.chunk_id)
        kw = max((s / best_bm25[qi] for qi, s in cand.bm25.items() if best_bm25[qi] > 0), default=0.0)
        scores[key] = alpha * max(cos.get(key, 0.0), 0.0) + (1 - alpha) * kw
    return scores


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
    cands, best_bm25, top_rrf = _fuse(stores, queries, query_vecs, allowed, options, settings)
    ordered = sorted(cands.values(), key=lambda c: -c.rrf)
    ranker = settings.default_ranker if options.ranker != "none" else "none"
    if ranker == "score_blend":
        pool = ordered[: settings.rerank_pool] if settings.rerank_pool > 0 else ordered
        blended = _blend(stores, pool, query_vecs, best_bm25, settings.blend_alpha)
        scored = sorted(((blended[(c.store, c.chunk_id)], c) for c in pool), key=lambda item: -item[0])
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
