"""Real ingestion into a real store index (SQLite + tantivy + faiss), then hybrid search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.embedding import Embedder
from spindle.retrieval.index.store import StoreIndex
from spindle.retrieval.parsers import FORMATS
from spindle.retrieval.pipeline import ingest
from spindle.retrieval.search import SearchOptions, search
from spindle.retrieval.settings import RetrievalSettings
from tests.retrieval.test_parsers import sample_file

# One distinct fact per format: a search for it must find that file first.
FACTS = {
    "c": "the orbital tether is made of braided graphene",
    "cs": "the pastry chef bakes croissants with yak butter",
    "cpp": "the submarine periscope rotates with a brass gear",
    "doc": "the harbour master registers whale sightings",
    "docx": "the vineyard harvests riesling grapes in October",
    "go": "the glassblower shapes amber vases at midnight",
    "html": "the observatory telescope mirror is polished sapphire",
    "java": "the jazz trumpeter improvises on a silver cornet",
    "json": "the volcano seismograph recorded tremors at dawn",
    "md": "the origami artist folds cranes from rice paper",
    "pdf": "the glacier research camp drills ice cores",
    "php": "the beekeeper harvests lavender honey in July",
    "pptx": "the quarterly revenue from wind turbines doubled",
    "py": "the falconer trains peregrine falcons to hunt",
    "rb": "the cartographer draws maps of coral reefs",
    "tex": "the theorem about prime gaps was proven by induction",
    "txt": "the lumberjack sharpens an axe with whetstone",
    "css": "the tailor stitches tweed jackets by hand",
    "js": "the locksmith opens antique safes with stethoscopes",
    "sh": "the astronaut grows lettuce in microgravity",
    "ts": "the sommelier decants vintage port slowly",
}


def _ingest(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings, file_id: str, name: str,
            data: bytes, attributes: dict | None = None, strategy: ChunkingStrategy | None = None) -> None:
    ingest(store, embedder, file_id, name, data, attributes or {}, strategy or ChunkingStrategy(), settings)


def _top(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings, query: str, **kw: object) -> list:
    return search([("vs_test", store)], [query], embedder, settings, SearchOptions(**kw))  # type: ignore[arg-type]


def test_each_format_is_found_by_its_fact(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings) -> None:
    for ext in sorted(FORMATS):
        _ingest(store, embedder, settings, f"file-{ext}", f"sample.{ext}", sample_file(ext, FACTS[ext]),
                {"ext": ext})
    for ext, fact in FACTS.items():
        hits = _top(store, embedder, settings, fact, max_num_results=3)
        assert hits and hits[0].file_id == f"file-{ext}", (ext, [h.file_id for h in hits])
        assert hits[0].filename == f"sample.{ext}" and 0 < hits[0].score <= 1
    # a paraphrase (no shared keywords) still finds the right file through the vectors
    hits = _top(store, embedder, settings, "bird of prey training", max_num_results=3)
    assert hits[0].file_id == "file-py"


def test_modes_rankers_threshold_and_limits(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings) -> None:
    for i in range(6):
        _ingest(store, embedder, settings, f"f{i}", f"doc{i}.txt", f"Doc {i}: zebras graze on savanna grass {i}.".encode())
    _ingest(store, embedder, settings, "fx", "other.txt", b"Quantum chromodynamics describes the strong force.")
    hits = _top(store, embedder, settings, "zebras", max_num_results=4)
    assert len(hits) == 4 and all(h.file_id.startswith("f") and h.file_id != "fx" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    none = _top(store, embedder, settings, "zebras", ranker="none", max_num_results=50)
    assert none and all(0 <= h.score <= 1 for h in none)
    # the threshold drops what scores below it: the fused score is 1 only for a chunk first in both lists
    cut = (none[0].score + none[-1].score) / 2
    above = _top(store, embedder, settings, "zebras", ranker="none", max_num_results=50, score_threshold=cut)
    assert 0 < len(above) < len(none) and all(h.score >= cut for h in above)
    keyword_only = search([("s", store)], ["chromodynamics"], embedder, settings,
                          SearchOptions(modes=("keyword",), max_num_results=5))
    assert [h.file_id for h in keyword_only] == ["fx"]


def test_attribute_filters(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings) -> None:
    rows = [("a", {"year": 2023, "team": "red", "draft": False}), ("b", {"year": 2024, "team": "blue"}),
            ("c", {"year": 2025, "team": "red", "draft": True})]
    for fid, attrs in rows:
        _ingest(store, embedder, settings, fid, f"{fid}.md", f"Budget report for the {attrs['team']} team.".encode(),
                attrs)

    def ids(filt: dict) -> set[str]:
        return {h.file_id for h in _top(store, embedder, settings, "budget report", filters=filt, max_num_results=10)}

    assert ids({"type": "eq", "key": "team", "value": "red"}) == {"a", "c"}
    assert ids({"type": "ne", "key": "team", "value": "red"}) == {"b"}
    assert ids({"type": "gte", "key": "year", "value": 2024}) == {"b", "c"}
    assert ids({"type": "lt", "key": "year", "value": 2024}) == {"a"}
    assert ids({"type": "in", "key": "year", "value": [2023, 2025]}) == {"a", "c"}
    assert ids({"type": "nin", "key": "year", "value": [2023, 2025]}) == {"b"}
    assert ids({"type": "eq", "key": "draft", "value": True}) == {"c"}
    assert ids({"type": "eq", "key": "year", "value": "2024"}) == set()  # types never coerce
    assert ids({"type": "and", "filters": [{"type": "eq", "key": "team", "value": "red"},
                                           {"type": "gt", "key": "year", "value": 2023}]}) == {"c"}
    assert ids({"type": "or", "filters": [{"type": "eq", "key": "team", "value": "blue"},
                                          {"type": "eq", "key": "draft", "value": False}]}) == {"a", "b"}
    store.set_attributes("b", {"year": 2024, "team": "red"})
    assert ids({"type": "eq", "key": "team", "value": "red"}) == {"a", "b", "c"}


def test_delete_replace_and_content(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings) -> None:
    text = " ".join(f"Line {i}: the mill grinds barley and rye into flour." for i in range(300))
    _ingest(store, embedder, settings, "mill", "mill.txt", text.encode())
    _ingest(store, embedder, settings, "keep", "keep.txt", b"Windmills pump water in the polder.")
    assert store.file_content("mill") == text
    info = store.chunks.file_info("mill")
    assert info is not None and info["chunks"] > 3 and info["embedded"] == 1
    _ingest(store, embedder, settings, "mill", "mill.txt", text.encode())  # re-ingest replaces
    assert store.chunks.file_info("mill")["chunks"] == info["chunks"]
    assert store.vectors.size() == info["chunks"] + 1
    assert store.delete_file("mill") and not store.delete_file("mill")
    assert store.vectors.size() == 1 and store.keyword.num_docs() == 1
    assert [h.file_id for h in _top(store, embedder, settings, "barley flour mill", max_num_results=5)] == ["keep"]


def test_persistence_snapshots_and_replay(tmp_path: Path, embedder: Embedder, settings: RetrievalSettings) -> None:
    small = settings.model_copy(update={"snapshot_min_delta": 3})
    path = tmp_path / "vs_p"
    index = StoreIndex(path, small, embedder.identity, embedder.dimensions)
    for i in range(3):
        _ingest(index, embedder, small, f"p{i}", f"p{i}.txt", f"Parrot number {i} speaks {i} words.".encode())
    snapshots_before = sorted(p.name for p in path.glob("vectors-*.faiss"))
    assert len(snapshots_before) == 1  # written after 3 changes
    _ingest(index, embedder, small, "p9", "p9.txt", b"A toucan eats papaya.")
    index.delete_file("p0")
    # the next file and a deletion do not rewrite the snapshot (below the delta): replay covers them
    assert sorted(p.name for p in path.glob("vectors-*.faiss")) == snapshots_before
    index.keyword.close()
    index.chunks.close()  # a crash: no final snapshot
    reopened = StoreIndex(path, small, embedder.identity, embedder.dimensions)
    assert reopened.vectors.size() == 3
    hits = search([("vs", reopened)], ["toucan papaya"], embedder, small, SearchOptions(max_num_results=1))
    assert hits[0].file_id == "p9"
    assert "p0" not in {h.file_id for h in search([("vs", reopened)], ["parrot"], embedder, small,
                                                   SearchOptions(max_num_results=10))}
    reopened.close()


def test_ivf_index_past_the_threshold(tmp_path: Path, embedder: Embedder, settings: RetrievalSettings) -> None:
    small = settings.model_copy(update={"ivf_threshold": 150, "ivf_nprobe": 8, "snapshot_min_delta": 10**9})
    index = StoreIndex(tmp_path / "vs_ivf", small, embedder.identity, embedder.dimensions)
    rng = np.random.default_rng(1)
    ids, _ = index.add_chunks("bulk", "bulk.txt", {}, [])
    vectors = rng.standard_normal((300, embedder.dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    from spindle.retrieval.chunker import Chunk

    chunks = [Chunk(i, 0, 1, 0, 1, f"synthetic chunk {i}") for i in range(300)]
    ids, ready = index.add_chunks("bulk", "bulk.txt", {}, chunks)
    ready.result()
    index.add_vectors("bulk", ids, vectors, 0)
    assert index.vectors.is_ivf
    _ingest(index, embedder, small, "real", "real.txt", b"The ferryman rows across the misty lake at night.")
    hits = search([("vs", index)], ["ferryman rowing on a lake"], embedder, small, SearchOptions(max_num_results=3))
    assert hits[0].file_id == "real"
    hit = index.vectors.search(vectors[7:8], 1)[0][0]
    assert hit[0] == ids[7]
    index.delete_file("real")
    assert index.vectors.size() == 300
    index.close()


def test_two_stores_searched_together(tmp_path: Path, embedder: Embedder, settings: RetrievalSettings) -> None:
    a = StoreIndex(tmp_path / "vs_a", settings, embedder.identity, embedder.dimensions)
    b = StoreIndex(tmp_path / "vs_b", settings, embedder.identity, embedder.dimensions)
    _ingest(a, embedder, settings, "fa", "a.txt", b"Assistant store: the museum opens at nine.")
    _ingest(b, embedder, settings, "fb", "b.txt", b"Thread store: the museum closes at six.")
    hits = search([("vs_a", a), ("vs_b", b)], ["when does the museum close"], embedder, settings,
                  SearchOptions(max_num_results=2))
    assert [h.file_id for h in hits] == ["fb", "fa"] and hits[0].store_id == "vs_b"
    a.close()
    b.close()


def test_a_store_from_another_embedder_is_keyword_only(tmp_path: Path, embedder: Embedder,
                                                        settings: RetrievalSettings) -> None:
    first = StoreIndex(tmp_path / "vs_e", settings, "remote:other-model:256", 256)
    first.close()
    index = StoreIndex(tmp_path / "vs_e", settings, embedder.identity, embedder.dimensions)
    assert not index.semantic_ok
    _ingest(index, embedder, settings, "k", "k.txt", b"Keyword search still finds the walrus.")
    assert [h.file_id for h in _top(index, embedder, settings, "walrus")] == ["k"]
    index.close()


@pytest.mark.parametrize("bad", ["broken.pdf", "x.unknown"])
def test_pipeline_errors_leave_the_store_untouched(store: StoreIndex, embedder: Embedder,
                                                   settings: RetrievalSettings, bad: str) -> None:
    from spindle.retrieval.errors import IngestError

    with pytest.raises(IngestError):
        _ingest(store, embedder, settings, "bad", bad, b"%PDF-1.4 nonsense")
    assert store.chunks.file_info("bad") is None


def test_token_limit_is_invalid_file(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings) -> None:
    from spindle.retrieval.errors import IngestError

    tight = settings.model_copy(update={"max_file_tokens": 50})
    with pytest.raises(IngestError) as info:
        ingest(store, embedder, "big", "big.txt", ("word " * 200).encode(), {}, ChunkingStrategy(), tight)
    assert info.value.code == "invalid_file" and "50" in info.value.message
