"""The vector-store index contract (``spindle.retrieval.index.base.SearchIndex``), run
against every implementation: the embedded index (SQLite + tantivy + faiss in a directory)
and the PostgreSQL one (a fresh database on a throwaway server with pgvector,
tests/pgserver.py). A new implementation adds one entry to ``KINDS``.

Expectations are computed independently here: BM25 from its formula over the texts (with the
same analysers), vector hits by brute force with numpy, file contents from the input texts.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spindle.retrieval.chunker import Chunk
from spindle.retrieval.embedding import Embedder
from spindle.retrieval.embedding.base import with_windows
from spindle.retrieval.index.base import SearchIndex
from spindle.retrieval.index.keyword import analyzers
from spindle.retrieval.index.store import StoreIndex
from spindle.retrieval.search import SearchOptions, search
from spindle.retrieval.settings import RetrievalSettings

KINDS = ["embedded", "postgres"]
DIM = 8
_SERVER: list[Any] = []

Opener = Callable[..., SearchIndex]


def _postgres_url() -> str:
    from tests.pgserver import PostgresServer, PostgresUnavailable

    if not _SERVER:
        try:
            _SERVER.append(PostgresServer().start())
        except PostgresUnavailable as exc:
            pytest.fail(f"the PostgreSQL index cannot be tested: {exc}")
        atexit.register(_SERVER[0].stop)
    url: str = _SERVER[0].create_database("ix_" + secrets.token_hex(6))

    async def migrate() -> None:  # the metadata store's migrations create the index tables
        from spindle.store.postgres import PostgresStore

        store = PostgresStore(url)
        await store.open()
        await store.close()

    asyncio.run(migrate())
    return url


@pytest.fixture(params=KINDS)
def open_index(request: pytest.FixtureRequest, tmp_path: Path, settings: RetrievalSettings) -> Iterator[Opener]:
    """``open_index(store_id, identity="test:model", dim=DIM)``: the store's index, as a new
    process would open it (PostgreSQL: a new connection pool on the same database)."""
    opened: list[Any] = []
    url = _postgres_url() if request.param == "postgres" else ""

    def opener(store_id: str = "vs_a", identity: str = "test:model", dim: int = DIM) -> SearchIndex:
        index: SearchIndex
        if request.param == "embedded":
            index = StoreIndex(tmp_path / store_id, settings, identity, dim)
            opened.append(index)
        else:
            from spindle.retrieval.index.pgindex import PgIndexBackend

            backend = PgIndexBackend(url, identity, dim)
            opened.append(backend)
            index = backend.open(store_id)
        return index

    opener.kind = request.param  # type: ignore[attr-defined]
    yield opener
    for thing in reversed(opened):
        thing.close()


def _chunks(texts: list[str]) -> list[Chunk]:
    out, pos, tokens = [], 0, 0
    for i, text in enumerate(texts):
        n = len(text.split())
        out.append(Chunk(i, tokens, tokens + n, pos, pos + len(text), text))
        pos, tokens = pos + len(text), tokens + n
    return out


def _add(index: SearchIndex, file_id: str, texts: list[str], vectors: np.ndarray | None = None,
         attributes: dict[str, Any] | None = None) -> list[int]:
    ids, ready = index.add_chunks(file_id, f"{file_id}.txt", attributes or {}, _chunks(texts))
    ready.result(timeout=30)
    if vectors is not None:
        index.add_vectors(file_id, ids, vectors, 100)
    return ids


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _fieldnorm(length: int) -> int:
    """Lucene's one-byte length (tantivy's too): exact below 24, then 4 significant bits."""
    if length < 24:
        return length
    rest = length - 24
    bits = rest.bit_length()
    return 24 + (rest if bits <= 4 else (rest >> (bits - 4)) << (bits - 4))


def _bm25(corpus: dict[int, str], query: str) -> dict[int, float]:
    """BM25 (k1 = 1.2, b = 0.75, tantivy's idf and field lengths) summed over the two analysed fields."""
    body, exact = analyzers()
    scores: dict[int, float] = {}
    for analyser in (exact, body):
        docs = {cid: Counter(analyser.analyze(text)) for cid, text in corpus.items()}
        n = len(docs)
        avg = sum(sum(c.values()) for c in docs.values()) / n
        for term in dict.fromkeys(analyser.analyze(query)):
            df = sum(1 for c in docs.values() if term in c)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for cid, counts in docs.items():
                tf = counts.get(term, 0)
                if tf:
                    dl = _fieldnorm(sum(counts.values()))
                    scores[cid] = scores.get(cid, 0.0) + idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avg))
    return scores


TEXTS_A = ["the red fox jumps over the lazy dog", "a lazy afternoon by the river",
           "invoice INV-2026-0042 was paid in March", "the fox and the hound are friends"]
TEXTS_B = ["rivers flow to the sea", "the dog barks at the mailman every morning",
           "quarterly revenue grew by 7,431,902 dollars"]


def test_chunks_are_stored_named_and_read_back(open_index: Opener) -> None:
    index = open_index()
    ids = _add(index, "fa", TEXTS_A, attributes={"team": "red"})
    assert ids == sorted(ids) and len(set(ids)) == len(TEXTS_A)
    rows = index.chunk_rows(ids)
    assert [rows[i].text for i in ids] == TEXTS_A and [rows[i].seq for i in ids] == [0, 1, 2, 3]
    assert {rows[i].file_id for i in ids} == {"fa"}
    assert index.file_names() == {"fa": ("fa.txt", {"team": "red"})}
    assert index.num_chunks() == len(TEXTS_A)
    assert index.file_content("fa") == "".join(TEXTS_A)
    assert index.file_content("nope") == "" and index.chunk_rows([max(ids) + 1000]) == {}


def test_bm25_scores_match_the_formula(open_index: Opener) -> None:
    index = open_index()
    ids_a = _add(index, "fa", TEXTS_A)
    ids_b = _add(index, "fb", TEXTS_B)
    corpus = dict(zip(ids_a + ids_b, TEXTS_A + TEXTS_B, strict=True))
    for query in ["lazy dog", "the fox", "river", "INV-2026-0042 invoice", "nothing-matches-this zzz"]:
        expected = _bm25(corpus, query)
        got = index.keyword_search(query, 10, None)
        assert [cid for cid, _ in got] == sorted(expected, key=lambda c: (-expected[c], c)), query
        for cid, score in got:
            assert score == pytest.approx(expected[cid], rel=2e-3), (query, corpus[cid])
    assert index.keyword_search("lazy dog", 1, None) == got_top(index, "lazy dog")
    # restricted to some files; an empty allowance finds nothing
    assert {cid for cid, _ in index.keyword_search("the dog", 10, ["fb"])} <= set(ids_b)
    assert index.keyword_search("the dog", 10, []) == []
    assert index.keyword_search("", 10, None) == [] and index.keyword_search("dog", 0, None) == []


def test_bm25_of_long_chunks_uses_the_stored_lengths(open_index: Opener) -> None:
    index = open_index()
    texts = [" ".join(["otter"] * a + ["pebble"] * b) for a, b in [(1, 30), (2, 57), (3, 100), (1, 333), (5, 999)]]
    ids = _add(index, "long", texts)
    expected = _bm25(dict(zip(ids, texts, strict=True)), "otter")
    got = index.keyword_search("otter", 10, None)
    assert [cid for cid, _ in got] == sorted(expected, key=lambda c: (-expected[c], c))
    assert dict(got) == pytest.approx(expected, rel=1e-4)


def test_bm25_with_a_term_in_more_chunks_than_are_read_per_term(open_index: Opener) -> None:
    # "common" is in all 300 chunks (more than the postings read per term); the chunks holding
    # "needle" rank by both terms, so the part of their score from "common" must be exact too.
    index = open_index()
    texts = [" ".join(["common"] * (1 + i % 7) + ["filler"] * (i % 13) + (["needle"] if i % 37 == 5 else []))
             for i in range(300)]
    ids = _add(index, "many", texts)
    expected = _bm25(dict(zip(ids, texts, strict=True)), "common needle")
    want = sorted(expected, key=lambda c: (-expected[c], c))[:10]
    got = index.keyword_search("common needle", 10, None)
    assert [cid for cid, _ in got][:8] == want[:8]  # the 8 needle chunks, in order
    for cid, score in got:
        assert score == pytest.approx(expected[cid], rel=1e-4)


def test_bm25_top_k_is_exact_when_common_terms_are_cut(open_index: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    # The PostgreSQL index reads a term's postings whole only up to TERM_FULL chunks; made tiny
    # here, "common" and "frequent" are cut lists, and the chunks that can still reach the top
    # look those terms up. The top k and its scores must be BM25's, also within a file filter.
    if open_index.kind == "postgres":  # type: ignore[attr-defined]
        from spindle.retrieval.index import pgindex, pgkeyword

        monkeypatch.setattr(pgkeyword, "TERM_FULL", 12)
        monkeypatch.setattr(pgindex, "_TERM_DEPTH_MIN", 5)
    index = open_index()
    rng = np.random.default_rng(11)
    corpus: dict[int, str] = {}
    by_file: dict[str, list[int]] = {}
    for file_id in ("fa", "fb"):
        texts = [" ".join(["common"] * int(rng.integers(1, 5)) + ["frequent"] * int(rng.integers(0, 3) * (i % 3 == 0))
                          + ["filler"] * int(rng.integers(0, 30)) + (["needle"] if i % 23 == 4 else []))
                 for i in range(150)]
        ids = _add(index, file_id, texts)
        corpus.update(zip(ids, texts, strict=True))
        by_file[file_id] = ids
    expected = _bm25(corpus, "common frequent needle")
    for allowed, pool in ((None, list(expected)), (["fb"], [c for c in expected if c in set(by_file["fb"])])):
        want = sorted(pool, key=lambda c: (-expected[c], c))[:10]
        got = index.keyword_search("common frequent needle", 10, allowed)
        assert len(got) == 10
        for (cid, score), wanted in zip(got, want, strict=True):  # equal scores may come in another order
            assert score == pytest.approx(expected[wanted], rel=1e-4) and score == pytest.approx(expected[cid], rel=1e-4)


def got_top(index: SearchIndex, query: str) -> list[tuple[int, float]]:
    return index.keyword_search(query, 10, None)[:1]


def test_replacing_and_deleting_a_file_updates_every_statistic(open_index: Opener) -> None:
    index = open_index()
    old = _add(index, "fa", TEXTS_A)
    ids_b = _add(index, "fb", TEXTS_B)
    new = _add(index, "fa", ["the fox sleeps", "no animals here"])  # replaces fa
    assert not set(old) & set(new) and index.chunk_rows(old) == {}
    corpus = dict(zip(new + ids_b, ["the fox sleeps", "no animals here", *TEXTS_B], strict=True))
    for query in ["fox", "the lazy dog", "river"]:
        expected = _bm25(corpus, query)
        got = index.keyword_search(query, 10, None)
        assert {cid for cid, _ in got} == set(expected)
        for cid, score in got:
            assert score == pytest.approx(expected[cid], rel=2e-3), query
    assert index.num_chunks() == 2 + len(TEXTS_B)
    assert index.delete_file("fa") and not index.delete_file("fa")
    assert index.num_chunks() == len(TEXTS_B) and set(index.file_names()) == {"fb"}
    assert index.keyword_search("fox", 10, None) == []
    expected = _bm25(dict(zip(ids_b, TEXTS_B, strict=True)), "the dog")
    assert dict(index.keyword_search("the dog", 10, None)) == pytest.approx(expected, rel=2e-3)


def test_vector_search_is_exact_and_respects_files(open_index: Opener) -> None:
    index = open_index()
    rng = np.random.default_rng(3)
    va, vb = _unit(rng, 40), _unit(rng, 30)
    ids_a = _add(index, "fa", [f"alpha {i}" for i in range(40)], va)
    ids_b = _add(index, "fb", [f"beta {i}" for i in range(30)], vb)
    all_ids, all_vecs = np.asarray(ids_a + ids_b), np.vstack([va, vb])
    queries = _unit(rng, 3)
    results = index.vector_search(queries, 5, None)
    for q, got in zip(queries, results, strict=True):
        scores = all_vecs @ q
        best = np.argsort(-scores)[:5]
        assert [cid for cid, _ in got] == [int(all_ids[i]) for i in best]
        assert [s for _, s in got] == pytest.approx([float(scores[i]) for i in best], abs=2e-3)
    only_b = index.vector_search(queries[:1], 50, ["fb"])[0]
    assert {cid for cid, _ in only_b} == set(ids_b)
    assert index.vector_search(queries[:1], 5, [])[0] == []
    got = index.chunk_vectors(ids_a[:2])
    assert np.allclose(got[ids_a[0]], va[0], atol=2e-3) and np.allclose(got[ids_a[1]], va[1], atol=2e-3)


def test_window_vectors_ride_on_chunk_vectors(open_index: Opener) -> None:
    index = open_index()
    rng = np.random.default_rng(4)
    plain = _unit(rng, 2)
    windows = [_unit(rng, 3), None]
    ids = _add(index, "fw", ["first chunk", "second chunk"], with_windows(plain, windows))
    got = index.window_vectors(ids)
    assert got[ids[0]].shape == (3, DIM) and np.allclose(got[ids[0]], windows[0], atol=2e-3)
    assert got[ids[1]].shape == (1, DIM) and np.allclose(got[ids[1]][0], plain[1], atol=2e-3)


def test_vectors_of_a_file_deleted_meanwhile_go_nowhere(open_index: Opener) -> None:
    index = open_index()
    rng = np.random.default_rng(5)
    ids = _add(index, "gone", ["soon deleted"])
    assert index.delete_file("gone")
    index.add_vectors("gone", ids, _unit(rng, 1), 10)
    assert index.vector_search(_unit(rng, 1), 5, None) == [[]]
    keep = _add(index, "keep", ["stays"], _unit(rng, 1))
    assert [cid for cid, _ in index.vector_search(_unit(rng, 1), 5, None)[0]] == keep


def test_rare_terms_and_their_holders(open_index: Opener) -> None:
    index = open_index()
    ids = _add(index, "fa", ["code ZX-81 and ZX-82", "code ZX-81 only", "nothing rare", "nothing rare again"])
    found = index.rare_terms("ZX-81 ZX-82 nothing", 2, None)
    assert found.terms == [("exact", "zx-81"), ("exact", "zx-82"), ("body", "zx"), ("body", "81"), ("body", "82"),
                           ("body", "noth")]  # every term in at most 2 chunks, in query order
    assert found.holders == {ids[0]: 5, ids[1]: 3, ids[2]: 1, ids[3]: 1}
    rarer = index.rare_terms("ZX-81 ZX-82 nothing", 1, None)
    assert rarer.terms == [("exact", "zx-82"), ("body", "82")] and rarer.holders == {ids[0]: 2}
    assert index.rare_terms("ZX-81 ZX-82", 2, ["other"]).holders == {}
    only = index.rare_terms("ZX-81 ZX-82", 5, None, {("exact", "zx-82")})
    assert only.terms == [("exact", "zx-82")] and only.holders == {ids[0]: 1}
    assert index.rare_terms("ZX-81", 5, []).terms == []
    assert index.rare_terms("ZX-81", 0, None).terms == []


def test_attribute_filters_follow_set_attributes(open_index: Opener) -> None:
    index = open_index()
    _add(index, "f1", ["one"], attributes={"year": 2024})
    _add(index, "f2", ["two"], attributes={"year": 2026})
    newer = {"type": "gte", "key": "year", "value": 2025}
    assert index.allowed_files(None) is None and index.allowed_files(newer) == ["f2"]
    index.set_attributes("f1", {"year": 2030})
    assert sorted(index.allowed_files(newer) or []) == ["f1", "f2"]
    assert index.file_names()["f1"] == ("f1.txt", {"year": 2030})


def test_another_process_sees_the_same_index(open_index: Opener) -> None:
    first = open_index()
    rng = np.random.default_rng(6)
    vecs = _unit(rng, 3)
    ids = _add(first, "fa", ["the walrus naps", "the seal swims", "the gull cries"], vecs)
    if open_index.kind == "embedded":  # type: ignore[attr-defined]
        first.close()  # one process at a time owns an embedded index directory
    second = open_index()
    assert second.keyword_search("walrus", 5, None)[0][0] == ids[0]
    assert second.vector_search(vecs[1:2], 1, None)[0][0][0] == ids[1]
    assert second.file_names() == {"fa": ("fa.txt", {})}
    if open_index.kind == "postgres":  # type: ignore[attr-defined]
        assert second.delete_file("fa")
        assert first.keyword_search("walrus", 5, None) == [] and first.file_names() == {}


def test_stores_are_isolated(open_index: Opener) -> None:
    a, b = open_index("vs_a"), open_index("vs_b")
    rng = np.random.default_rng(7)
    _add(a, "fa", ["penguins waddle"], _unit(rng, 1))
    ids_b = _add(b, "fb", ["penguins dive"], _unit(rng, 1))
    assert [cid for cid, _ in b.keyword_search("penguins", 10, None)] == ids_b
    assert [cid for cid, _ in b.vector_search(_unit(rng, 1), 10, None)[0]] == ids_b
    assert set(b.file_names()) == {"fb"} and b.num_chunks() == 1


def test_a_store_from_another_embedder_is_keyword_only(open_index: Opener) -> None:
    first = open_index("vs_e", identity="remote:other", dim=4)
    rng = np.random.default_rng(8)
    _add(first, "fe", ["the narwhal"], _unit(rng, 1, 4))
    first.close()
    index = open_index("vs_e", identity="test:model", dim=DIM)
    assert not index.semantic_ok
    assert index.vector_search(_unit(rng, 1), 5, None) == [[]]
    assert index.window_vectors([1, 2, 3]) == {} and index.keyword_search("narwhal", 5, None)


def test_hybrid_search_runs_on_the_index(open_index: Opener, embedder: Embedder,
                                         settings: RetrievalSettings) -> None:
    index = open_index(identity=embedder.identity, dim=embedder.dimensions)
    facts = {"f1": "The lighthouse keeper polishes the brass lamp every evening.",
             "f2": "Invoice INV-2026-0042 covers forty crates of oranges.",
             "f3": "The glacier retreated two kilometres in a decade."}
    for file_id, text in facts.items():
        chunks = _chunks([text])
        ids, ready = index.add_chunks(file_id, f"{file_id}.txt", {"id": file_id}, chunks)
        ready.result()
        index.add_vectors(file_id, ids, embedder.embed_chunks(text, chunks), 0)
    options = SearchOptions(max_num_results=3)
    hits = search([("vs_a", index)], ["who looks after the lamp in the tower?"], embedder, settings, options)
    assert hits[0].file_id == "f1" and hits[0].filename == "f1.txt" and hits[0].attributes == {"id": "f1"}
    hits = search([("vs_a", index)], ["INV-2026-0042"], embedder, settings, options)
    assert hits[0].file_id == "f2" and 0 < hits[0].score <= 1
    filtered = SearchOptions(max_num_results=3, filters={"type": "eq", "key": "id", "value": "f3"})
    assert [h.file_id for h in search([("vs_a", index)], ["lamp"], embedder, settings, filtered)] == ["f3"]


def _pg_index(open_index: Opener, monkeypatch: pytest.MonkeyPatch, quiet: float = 3600.0) -> Any:
    """A PostgreSQL store index that switches to HNSW from 200 vectors, its builds waiting ``quiet`` s."""
    if open_index.kind != "postgres":  # type: ignore[attr-defined]
        pytest.skip("HNSW is the PostgreSQL index's; the embedded one has its IVF test in test_index.py")
    from spindle.retrieval.index import pgindex

    monkeypatch.setattr(pgindex, "HNSW_MIN_VECTORS", 200)
    index = open_index()
    assert isinstance(index, pgindex.PgStoreIndex)
    index._b.hnsw_quiet_seconds = quiet
    return index


def _hnsw_valid(index: Any) -> bool | None:
    """Whether the store's HNSW index exists and is valid (None: no index)."""
    import psycopg

    with psycopg.connect(index._b.url) as conn:
        row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                           (f"vs_index_vec_{index.key}_hnsw",)).fetchone()
    return None if row is None else bool(row[0])


def _wait(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _brute(vecs: np.ndarray, ids: list[int], query: np.ndarray, k: int) -> list[int]:
    return [ids[i] for i in np.argsort(-(vecs @ query), kind="stable")[:k]]


def test_postgres_switches_to_hnsw_when_large(open_index: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    index = _pg_index(open_index, monkeypatch)
    rng = np.random.default_rng(9)
    vecs = _unit(rng, 300)
    ids = _add(index, "big", [f"row {i}" for i in range(300)], vecs)
    # Crossing the threshold schedules a build; until it runs, searches scan exactly.
    assert not index.is_hnsw() and _hnsw_valid(index) is None
    for i in range(0, 300, 30):
        assert [cid for cid, _ in index.vector_search(vecs[i : i + 1], 5, None)[0]] == _brute(vecs, ids, vecs[i], 5)
    assert index.ensure_hnsw() and index.is_hnsw() and _hnsw_valid(index) is True
    assert index.ensure_hnsw()  # once built, nothing more to do
    hits = 0
    for i in range(0, 300, 10):  # a vector finds itself first
        got = index.vector_search(vecs[i : i + 1], 3, None)[0]
        hits += got[0][0] == ids[i]
    assert hits >= 28
    # a filtered search stays exact
    got = index.vector_search(vecs[:1], 300, ["big"])[0]
    assert len(got) == 300
    # later inserts are maintained by the index
    more = _unit(rng, 20)
    new_ids = _add(index, "more", [f"more {i}" for i in range(20)], more)
    assert index.vector_search(more[:1], 1, None)[0][0][0] == new_ids[0]


def test_postgres_small_store_gets_no_hnsw(open_index: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    index = _pg_index(open_index, monkeypatch, quiet=0.0)
    _add(index, "small", [f"row {i}" for i in range(150)], _unit(np.random.default_rng(3), 150))
    assert not index.ensure_hnsw() and not index.is_hnsw() and _hnsw_valid(index) is None


def test_postgres_builds_hnsw_once_writes_pause(open_index: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    index = _pg_index(open_index, monkeypatch, quiet=0.3)
    rng = np.random.default_rng(4)
    for n in range(3):  # the third file crosses 200 vectors
        _add(index, f"f{n}", [f"row {n} {i}" for i in range(90)], _unit(rng, 90))
    assert _wait(index.is_hnsw) and _hnsw_valid(index) is True


def test_postgres_hnsw_build_of_a_dead_writer_is_done_by_a_reader(open_index: Opener,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _pg_index(open_index, monkeypatch)
    vecs = _unit(np.random.default_rng(5), 250)
    ids = _add(writer, "big", [f"row {i}" for i in range(250)], vecs)
    writer._b.close()  # the writer's process goes away before its scheduled build ran
    reader = open_index()
    reader._b.hnsw_quiet_seconds = 0.1
    assert not reader.is_hnsw()
    assert [cid for cid, _ in reader.vector_search(vecs[:1], 3, None)[0]] == _brute(vecs, ids, vecs[0], 3)
    reader.file_names()  # what every search reads: it notices the store waits for its index
    assert _wait(reader.is_hnsw) and _hnsw_valid(reader) is True


def test_postgres_invalid_hnsw_left_by_a_killed_build_is_replaced(open_index: Opener,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    index = _pg_index(open_index, monkeypatch)
    vecs = _unit(np.random.default_rng(6), 250)
    ids = _add(index, "big", [f"row {i}" for i in range(250)], vecs)
    assert index.ensure_hnsw()
    with psycopg.connect(index._b.url, autocommit=True) as conn:  # what a build killed midway leaves
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)",
                     (f"vs_index_vec_{index.key}_hnsw",))
        conn.execute("UPDATE vs_index_stores SET hnsw = false WHERE key = %s", (index.key,))
    assert _hnsw_valid(index) is False
    # an invalid index is not used: searches are exact
    assert [cid for cid, _ in index.vector_search(vecs[:1], 4, None)[0]] == _brute(vecs, ids, vecs[0], 4)
    assert index.ensure_hnsw() and _hnsw_valid(index) is True and index.is_hnsw()


def test_postgres_hnsw_build_lets_readers_and_writers_on(open_index: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build waits for a writer's open transaction; meanwhile searches answer (exactly), the
    writer commits, and the finished index holds the vector written during the build."""
    import threading

    import psycopg

    index = _pg_index(open_index, monkeypatch)
    rng = np.random.default_rng(8)
    vecs = _unit(rng, 250)
    ids = _add(index, "big", [f"row {i}" for i in range(250)], vecs)
    late = _add(index, "late", ["written while the index is built"])
    late_vec = _unit(rng, 1)
    result: list[bool] = []
    with psycopg.connect(index._b.url) as writer:
        from pgvector.psycopg import register_vector

        register_vector(writer)
        writer.execute(f"INSERT INTO vs_index_vec_{index.key} (chunk_id, vec) VALUES (%s, %s)", (late[0], late_vec[0]))
        builder = threading.Thread(target=lambda: result.append(index.ensure_hnsw()))
        builder.start()
        assert _wait(lambda: _hnsw_valid(index) is False)  # the build has begun and waits for the writer
        assert [cid for cid, _ in index.vector_search(vecs[:1], 3, None)[0]] == _brute(vecs, ids, vecs[0], 3)
        assert not index.ensure_hnsw()  # a second builder does not start another build
        writer.commit()
    builder.join(60)
    assert result == [True] and _hnsw_valid(index) is True
    assert index.vector_search(late_vec, 1, None)[0][0][0] == late[0]
