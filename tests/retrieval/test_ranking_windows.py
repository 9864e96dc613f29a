"""Long chunks score by their best window; stores written before this change still open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import tantivy

from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.embedding import Embedder
from spindle.retrieval.index.store import StoreIndex
from spindle.retrieval.pipeline import ingest
from spindle.retrieval.search import SearchOptions, search
from spindle.retrieval.settings import RetrievalSettings
from tests.retrieval.test_ranking_exact import INVOICES, filler_page

FACT = ("Important: the emergency generator runs on hydrogen fuel cells made by Zephyr Labs. "
        "Its hydrogen fuel tanks are refilled every month.")
# short files, each about part of the question (emergencies, fuel, power) but not answering it
NEIGHBOURS = {
    "first-aid.txt": "The office keeps a first aid kit and a fire extinguisher for emergencies.",
    "fuel-prices.txt": "Diesel and petrol prices rose sharply this winter, the transport office reported.",
    "tariff.txt": "Our electricity supplier switched us to a greener tariff last year.",
    "hydrogen.txt": "Hydrogen is the lightest element in the periodic table.",
    "power-cut.txt": "During the power cut the lights in the office went out for ten minutes.",
}


def _long_document() -> str:
    page = filler_page(5, words=1200).split(". ")
    return ". ".join(page[:40]) + ". " + FACT + " " + ". ".join(page[40:])


def test_one_relevant_sentence_in_a_long_chunk_counts(store: StoreIndex, embedder: Embedder,
                                                      settings: RetrievalSettings) -> None:
    one_chunk = ChunkingStrategy(4096, 0)  # the whole document is one chunk of several windows
    ingest(store, embedder, "long", "long.txt", _long_document().encode(), {}, one_chunk, settings)
    for name, text in NEIGHBOURS.items():
        ingest(store, embedder, name, name, text.encode(), {}, ChunkingStrategy(), settings)
    (chunk_id,) = store.chunks.chunk_ids_of(["long"])
    windows = store.window_vectors([int(chunk_id)])[int(chunk_id)]
    assert windows.shape[0] >= 4  # kept per window, not only the mean
    query = "which fuel does the emergency generator use?"
    semantic = search([("vs", store)], [query], embedder, settings,
                      SearchOptions(max_num_results=5, modes=("semantic",)))
    assert semantic[0].file_id == "long", [h.file_id for h in semantic]
    # the chunk's mean vector alone ranks it below short neighbours: the window scoring is what helps
    mean_only = search([("vs", store)], [query], embedder, settings,
                       SearchOptions(max_num_results=5, modes=("semantic",), window_scoring=False))
    assert mean_only[0].file_id != "long"
    hybrid = search([("vs", store)], [query], embedder, settings, SearchOptions(max_num_results=5))
    assert hybrid[0].file_id == "long"


def _make_old(path: Path) -> None:
    """Turn a store into what the previous release wrote: no window column, no schema mark, and
    a keyword index of the old schema (one stemmed body field)."""
    db = sqlite3.connect(path / "chunks.sqlite")
    db.execute("DELETE FROM meta WHERE key='keyword_schema'")
    db.execute("ALTER TABLE chunks DROP COLUMN wvec")
    rows = db.execute("SELECT id, file_id, text FROM chunks").fetchall()
    db.commit()
    db.close()
    for child in (path / "keyword").iterdir():
        child.unlink()
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("chunk_id", stored=False, indexed=False, fast=True)
    builder.add_text_field("file", stored=False, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("body", stored=False, tokenizer_name="en_stem", index_option="freq")
    old = tantivy.Index(builder.build(), path=str(path / "keyword"))
    writer = old.writer(16 * 1024 * 1024, 1)
    for chunk_id, file_id, text in rows:
        writer.add_document(tantivy.Document(chunk_id=chunk_id, file=file_id, body=text))
    writer.commit()
    writer.wait_merging_threads()


def test_a_store_from_the_previous_release_opens_and_is_reindexed(tmp_path: Path, embedder: Embedder,
                                                                  settings: RetrievalSettings) -> None:
    path = tmp_path / "vs_old"
    index = StoreIndex(path, settings, embedder.identity, embedder.dimensions)
    for name, text in INVOICES.items():
        ingest(index, embedder, name, name, text.encode(), {}, ChunkingStrategy(), settings)
    index.close()
    _make_old(path)
    reopened = StoreIndex(path, settings, embedder.identity, embedder.dimensions)
    try:
        assert reopened.keyword.num_docs() == len(INVOICES) and reopened.vectors.size() == len(INVOICES)
        hits = search([("vs", reopened)], ["7,431,902,116"], embedder, settings, SearchOptions(max_num_results=3))
        assert hits[0].file_id == "invoice-0043.txt"
        # incremental indexing goes on in the rebuilt index
        ingest(reopened, embedder, "new.txt", "new.txt", b"Invoice INV-2027-0001 totals 5,000,001 USD.", {},
               ChunkingStrategy(), settings)
        assert search([("vs", reopened)], ["INV-2027-0001"], embedder, settings,
                      SearchOptions(max_num_results=1))[0].file_id == "new.txt"
    finally:
        reopened.close()
    again = StoreIndex(path, settings, embedder.identity, embedder.dimensions)  # rebuilt once, not on every open
    try:
        assert again.chunks.get_meta("keyword_schema") == "2" and again.keyword.num_docs() == len(INVOICES) + 1
    finally:
        again.close()
