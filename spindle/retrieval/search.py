"""Hybrid search over one or more stores: BM25 + vectors, equal-weight RRF, exact terms, rerank.

The fusion rule was fixed before it was measured (docs/retrieval_quality.md): reciprocal rank
fusion with the conventional ``k = 60`` and equal weights for the BM25 and the vector ranking
(``w / (k + rank)``, no calibration between BM25 and cosine scores, nothing fitted to a set).
Per query and store:

1. Candidates: the top 60 by BM25, the top 60 by vector, and every chunk holding a *rare
   exact* query term: one that looks like an identifier, a number, a name or a code
   (``exact_like``) and occurs in at most ``max(3, 0.1% of the chunks)`` chunks, capped at 256.
2. Vector score of a candidate: the best of its chunk vector and its window vectors. A chunk
   of 800 tokens is embedded in ~5 model windows whose mean is its chunk vector; one relevant
   sentence is 1/5 of that mean but most of its window, so the chunk scores by its best part.
   The candidates are ranked by that score for the vector side of the fusion (for chunks of
   one window it is the plain cosine, and the ranking is the index's own).
3. Fusion by RRF; several queries add up.
4. Exact terms: the chunks holding all of a query's rare terms are placed above all other
   chunks (in fused order among themselves), so a looked-up invoice number, name or code is
   never outranked by chunks without it, nor by chunks holding only some of its parts.
5. The ranker: ``auto`` / ``default-*`` use ``settings.default_ranker``, which is ``none``
   (the fused order): no rerank stage measured better on every evaluation set. ``feedback``
   (pseudo-relevance feedback on vectors) stays available as a setting.

Scores are in [0, 1] (the fused score over the highest possible one), so ``score_threshold``
means the same for every ranker. Blocking: call ``search`` from a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spindle.retrieval import tokenizer
from spindle.retrieval.embedding import Embedder
from spindle.retrieval.index.base import SearchIndex
from spindle.retrieval.settings import RetrievalSettings

_RARE_CAP = 256  # chunks fetched per rare term: bounds the work on very large stores
_WORD = re.compile(r"[^\W_]+")
_MAX_WORDS = 64


@dataclass
class SearchOptions:
    max_num_results: int = 10
    ranker: str = "auto"  # "none" skips the ranker; anything else uses settings.default_ranker
    score_threshold: float = 0.0
    filters: dict[str, Any] | None = None
    # Which candidate lists to fuse (the quality benchmark measures each alone).
    modes: tuple[str, ...] = ("keyword", "semantic")
    # The benchmark turns these off to measure plain RRF.
    rare_terms: bool = True
    window_scoring: bool = True


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
    # per query with rare terms: how many of them this chunk holds, and how many there are
    rare: list[tuple[int, int]] = field(default_factory=list)


def rare_limit(n_chunks: int, settings: RetrievalSettings) -> int:
    """Largest document frequency of a "rare" term in a store of ``n_chunks`` chunks."""
    return min(_RARE_CAP, max(settings.rare_term_min_chunks, int(n_chunks * settings.rare_term_fraction)))


def exact_like(index: SearchIndex, query: str, settings: RetrievalSettings) -> set[tuple[str, str]]:
    """The query's terms that look like identifiers, numbers, names or codes rather than
    ordinary words: every compound token (``INV-2026-0042``), and every word that has a digit,
    a capital after its first letter (``CFOs``, ``iPhone``), a capital while not the query's
    first word (a name: ``project Lantern``), or is not one token of the o200k vocabulary
    (made-up names, codes: ``Hexlarion``). Ordinary words that merely happen to be rare in a
    store (``immediate``, ``versus``) are left to BM25's weighting: forcing them first measured
    worse on natural-language queries."""
    terms = {(name, term) for name, term in index.terms(query) if name == "exact"}
    try:
        enc: tokenizer.O200k | None = tokenizer.load(settings.vocab_dir)
    except tokenizer.VocabularyMissing:  # no vocabulary: the lexical tests alone
        enc = None
    for position, match in enumerate(_WORD.finditer(query)):
        if position >= _MAX_WORDS:  # bounds the work for a very long query (BM25 caps its terms too)
            break
        word = match.group(0)
        if (any(ch.isdigit() for ch in word) or any(ch.isupper() for ch in word[1:])
                or (position > 0 and word[0].isupper())
                or (enc is not None and len(enc.encode(" " + word.lower())) > 1)):
            terms.update(("body", term) for term in index.word_terms(word))
    return terms


def _vector_ranking(
    stores: Sequence[tuple[str, SearchIndex]],
    keys: list[tuple[int, int]],
    query_vec: np.ndarray,
    depth: int,
) -> list[tuple[int, int]]:
    """``keys`` (store, chunk id) with a vector, ranked by the best window cosine, top ``depth``."""
    by_store: dict[int, list[int]] = {}
    for si, cid in keys:
        by_store.setdefault(si, []).append(cid)
    scored: list[tuple[float, tuple[int, int]]] = []
    for si, ids in by_store.items():
        for cid, windows in stores[si][1].window_vectors(ids).items():
            if windows.shape[1] == query_vec.shape[0]:
                scored.append((float(np.max(windows @ query_vec)), (si, cid)))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [key for _, key in scored[:depth]]


def _fuse(
    stores: Sequence[tuple[str, SearchIndex]],
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
    use_rare = use_kw and options.rare_terms
    cands: dict[tuple[int, int], _Candidate] = {}

    def add_ranking(keys: list[tuple[int, int]], weight: float) -> None:
        for rank, key in enumerate(keys, start=1):
            cand = cands.setdefault(key, _Candidate(*key))
            cand.rrf += weight / (k_rrf + rank)

    for qi, query in enumerate(queries):
        pool: dict[tuple[int, int], None] = {}
        kw_keys: list[tuple[int, int]] = []
        if use_kw:
            hits = [(si, cid, score) for si, (_, index) in enumerate(stores)
                    for cid, score in index.keyword_search(query, kw_k, allowed[si])]
            hits.sort(key=lambda hit: -hit[2])  # several stores: one list by score
            kw_keys = [(si, cid) for si, cid, _ in hits[:kw_k]]
            pool.update(dict.fromkeys(kw_keys))
        holders: dict[tuple[int, int], int] = {}
        n_rare: dict[int, int] = {}  # per store: rarity is a matter of each index's frequencies
        if use_rare:
            for si, (_, index) in enumerate(stores):
                found = index.rare_terms(query, rare_limit(index.num_chunks(), settings), allowed[si],
                                         exact_like(index, query, settings))
                n_rare[si] = len(found.terms)
                for cid, count in found.holders.items():
                    holders[(si, cid)] = count
            pool.update(dict.fromkeys(holders))
        sem_keys: list[tuple[int, int]] = []
        if use_sem and query_vecs is not None:
            scored = [(score, (si, cid)) for si, (_, index) in enumerate(stores)
                      for cid, score in index.vector_search(query_vecs[qi : qi + 1], sem_k, allowed[si])[0]]
            scored.sort(key=lambda item: -item[0])
            sem_keys = [key for _, key in scored[:sem_k]]
            if options.window_scoring:
                pool.update(dict.fromkeys(sem_keys))
                sem_keys = _vector_ranking(stores, list(pool), query_vecs[qi], sem_k)
        add_ranking(kw_keys, w_kw)
        add_ranking(sem_keys, w_sem)
        for key in pool:
            if n_rare.get(key[0], 0):
                cand = cands.setdefault(key, _Candidate(*key))
                cand.rare.append((holders.get(key, 0), n_rare[key[0]]))
    weights = (w_kw if use_kw else 0.0) + (w_sem if use_sem else 0.0)
    return cands, len(queries) * weights / (k_rrf + 1)


def _exact_first(scored: list[tuple[float, _Candidate]]) -> list[tuple[float, _Candidate]]:
    """Chunks holding all rare terms of a query move above every other chunk, keeping their
    order among themselves (and so do the rest). A moved chunk takes at least the score of the
    chunk it now precedes, so scores stay non-increasing."""
    def holds_all(cand: _Candidate) -> bool:
        return any(held == total for held, total in cand.rare)

    first = [item for item in scored if holds_all(item[1])]
    if not first:
        return scored
    out = first + [item for item in scored if not holds_all(item[1])]
    for i in range(len(out) - 2, -1, -1):
        if out[i][0] < out[i + 1][0]:
            out[i] = (out[i + 1][0], out[i][1])
    return out


def _feedback(
    stores: Sequence[tuple[str, SearchIndex]],
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
    stores: Sequence[tuple[str, SearchIndex]],
    queries: list[str],
    embedder: Embedder | None,
    settings: RetrievalSettings,
    options: SearchOptions,
) -> list[SearchHit]:
    """The best chunks for ``queries`` across ``stores`` (blocking)."""
    queries = [q for q in queries if q.strip()]
    if not queries or not stores:
        return []
    need_vectors = (embedder is not None and "semantic" in options.modes
                    and any(index.semantic_ok for _, index in stores))
    query_vecs = embedder.embed_queries(queries) if need_vectors and embedder is not None else None
    allowed = [index.allowed_files(options.filters) for _, index in stores]
    cands, top_rrf = _fuse(stores, queries, query_vecs, allowed, options, settings)
    ordered = sorted(cands.values(), key=lambda c: (-c.rrf, c.store, c.chunk_id))
    ranker = settings.default_ranker if options.ranker != "none" else "none"
    reranked = None
    if ranker == "feedback" and query_vecs is not None and ordered:
        reranked = _feedback(stores, ordered, query_vecs, settings.feedback_docs, settings.feedback_weight)
    if reranked is not None:
        # candidates without a vector yet (file still embedding) keep their fused rank, below the rest
        scored = sorted(((reranked.get((c.store, c.chunk_id), 0.0), c) for c in ordered), key=lambda item: -item[0])
    else:
        scored = [(c.rrf / top_rrf if top_rrf > 0 else 0.0, c) for c in ordered]
    scored = _exact_first(scored)
    kept = [(min(max(s, 0.0), 1.0), c) for s, c in scored if s >= options.score_threshold]
    kept = kept[: options.max_num_results]
    return _materialise(stores, kept)


def _materialise(stores: Sequence[tuple[str, SearchIndex]], kept: list[tuple[float, _Candidate]]) -> list[SearchHit]:
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
