"""The local embedder represents whole chunks, embeds overlaps once, and matches the model."""

from __future__ import annotations

import numpy as np

from spindle.retrieval import tokenizer
from spindle.retrieval.chunker import ChunkingStrategy, chunk_text
from spindle.retrieval.embedding import Embedder
from spindle.retrieval.embedding.local import LocalEmbedder
from spindle.retrieval.settings import RetrievalSettings

FILLER = " ".join(
    f"Paragraph {i} describes the maintenance schedule of conveyor belt number {i} in the north hall."
    for i in range(120)
)


def test_short_chunk_equals_plain_sentence_embedding(settings: RetrievalSettings, embedder: Embedder) -> None:
    enc = tokenizer.load(settings.vocab_dir)
    text = "The lighthouse keeper counts gulls every morning."
    chunks = chunk_text(enc, text, ChunkingStrategy())
    vec = embedder.embed_chunks(text, chunks)
    query = embedder.embed_queries([text])
    assert vec.shape == (1, 384)
    assert abs(float(np.linalg.norm(vec[0])) - 1.0) < 1e-4
    assert float(vec[0] @ query[0]) > 0.999


def test_windows_cover_every_chunk_once(settings: RetrievalSettings, embedder: Embedder) -> None:
    assert isinstance(embedder, LocalEmbedder)
    enc = tokenizer.load(settings.vocab_dir)
    chunks = chunk_text(enc, FILLER, ChunkingStrategy())
    assert len(chunks) >= 3
    windows, chunk_windows = embedder.segment_windows(FILLER, chunks)
    whole = len(embedder._ensure()[0].word_pieces([FILLER])[0])
    embedded = sum(len(w) for w in windows)
    # the 400-token overlaps are embedded once: total ≈ the document, not ~2x it
    assert abs(embedded - whole) <= len(windows) * 2
    assert all(len(w) <= settings.embed_window_tokens - 2 for w in windows)
    for chunk, members in zip(chunks, chunk_windows, strict=True):
        pieces = len(embedder._ensure()[0].word_pieces([chunk.text])[0])
        covered = sum(len(windows[i]) for i in members)
        assert abs(covered - pieces) <= 8  # the whole chunk, not its first 256 pieces
        assert len(members) >= 2 or pieces <= 254


def test_fact_at_the_end_of_a_long_chunk_counts(settings: RetrievalSettings, embedder: Embedder) -> None:
    enc = tokenizer.load(settings.vocab_dir)
    fact = " Important: the emergency generator runs on hydrogen fuel cells made by Zephyr Labs."
    text = FILLER[:2500] + fact
    one = ChunkingStrategy(4096, 0)
    chunks = chunk_text(enc, text, one)
    assert len(chunks) == 1 and enc.count(text) > 400
    with_fact = embedder.embed_chunks(text, chunks)[0]
    without = embedder.embed_chunks(FILLER[:2500], chunk_text(enc, FILLER[:2500], one))[0]
    query = embedder.embed_queries(["which fuel does the emergency generator use?"])[0]
    assert float(query @ with_fact) > float(query @ without) + 0.02


def test_bf16_choice_is_reported(embedder: Embedder) -> None:
    assert isinstance(embedder, LocalEmbedder)
    info = embedder.info()
    assert info["dtype"] in ("bfloat16", "float32") and info["threads"] >= 1
