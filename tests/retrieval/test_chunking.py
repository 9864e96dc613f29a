"""o200k_base offline tokenizer and the API's chunking rules."""

from __future__ import annotations

import pytest

from spindle.retrieval import tokenizer
from spindle.retrieval.chunker import ChunkingStrategy, InvalidChunking, chunk_text, token_windows
from spindle.retrieval.settings import RetrievalSettings


@pytest.fixture(scope="module")
def enc(settings: RetrievalSettings) -> tokenizer.O200k:
    return tokenizer.load(settings.vocab_dir)


def test_o200k_matches_openai(enc: tokenizer.O200k) -> None:
    # Reference ids of o200k_base (as tiktoken with OpenAI's published file gives them).
    assert enc.encode("hello world") == [24912, 2375]
    assert enc.encoding.n_vocab == 200019
    assert enc.count("<|endoftext|>") > 1  # special tokens are plain text here


def test_char_offsets_never_split_characters(enc: tokenizer.O200k) -> None:
    text = "Zoë — 東京の天気 🎉🎉 done"
    tokens = enc.encode(text)
    offsets = enc.char_offsets(text, tokens)
    assert offsets[0] == 0 and offsets[-1] == len(text)
    assert list(offsets) == sorted(offsets)
    assert "".join(text[offsets[i] : offsets[i + 1]] for i in range(len(tokens))) == text


def test_auto_windows() -> None:
    auto = ChunkingStrategy()
    assert token_windows(2000, auto) == [(0, 800), (400, 1200), (800, 1600), (1200, 2000)]
    assert token_windows(800, auto) == [(0, 800)]
    assert token_windows(801, auto) == [(0, 800), (400, 801)]
    assert token_windows(5, auto) == [(0, 5)]
    assert token_windows(0, auto) == []


def test_static_windows() -> None:
    static = ChunkingStrategy(100, 0)
    assert token_windows(250, static) == [(0, 100), (100, 200), (200, 250)]


def test_chunks_are_slices_of_the_text(enc: tokenizer.O200k) -> None:
    text = " ".join(f"Sentence {i} about ünïcode and 漢字." for i in range(400))
    chunks = chunk_text(enc, text, ChunkingStrategy(200, 100))
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text == text[chunk.char_start : chunk.char_end]
        assert chunk.n_tokens <= 200
        assert enc.count(chunk.text) <= 202  # re-encoding a slice may differ at its edges
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)
    assert chunks[1].token_start == 100


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ({"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}},
         "chunking_strategy.static.max_chunk_size_tokens"),
        ({"type": "static", "static": {"max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 0}},
         "chunking_strategy.static.max_chunk_size_tokens"),
        ({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}},
         "chunking_strategy.static.chunk_overlap_tokens"),
        ({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": -1}},
         "chunking_strategy.static.chunk_overlap_tokens"),
        ({"type": "static", "static": {"max_chunk_size_tokens": "800", "chunk_overlap_tokens": 1}},
         "chunking_strategy.static.max_chunk_size_tokens"),
        ({"type": "static"}, "chunking_strategy.static"),
        ({"type": "fancy"}, "chunking_strategy.type"),
        ("auto", "chunking_strategy"),
    ],
)
def test_invalid_strategies(value: object, param: str) -> None:
    with pytest.raises(InvalidChunking) as info:
        ChunkingStrategy.from_request(value)
    assert info.value.param == param


def test_valid_strategies_and_their_object() -> None:
    assert ChunkingStrategy.from_request(None) == ChunkingStrategy(800, 400)
    assert ChunkingStrategy.from_request({"type": "auto"}) == ChunkingStrategy(800, 400)
    edge = {"type": "static", "static": {"max_chunk_size_tokens": 4096, "chunk_overlap_tokens": 2048}}
    assert ChunkingStrategy.from_request(edge) == ChunkingStrategy(4096, 2048)
    assert ChunkingStrategy().to_object() == {
        "type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}
    }
