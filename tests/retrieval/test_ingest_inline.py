"""Small plain-text files are read in the calling thread, everything else in a parser process
(``ParserPool.prepare``): the same text and chunk bounds either way, the same refusals, and
no process is started for a small ``.txt``/``.md``/``.json``."""

from __future__ import annotations

import codecs
import time
from pathlib import Path

import numpy as np
import pytest

from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.errors import IngestError
from spindle.retrieval.parsers import ParseLimits
from spindle.retrieval.parsers.pool import INLINE_TEXT_MAX_BYTES, ParserPool
from spindle.retrieval.parsers.worker import Job
from spindle.retrieval.settings import RetrievalSettings
from tests.retrieval.test_parsers import sample_file

TEXT = "The lighthouse keeper logs INV-2026-0042 at dawn. Zoë's café, 東京. " * 60


@pytest.fixture
def pool(settings: RetrievalSettings) -> ParserPool:
    parsers = ParserPool(1, 1024, 60.0, settings.vocab_dir)
    yield parsers
    parsers.close()


def _through_process(pool: ParserPool, settings: RetrievalSettings, name: str, data: bytes,
                     strategy: ChunkingStrategy) -> tuple[str, np.ndarray, int]:
    """What a parser process answers for this file (``run`` always uses one)."""
    limits = ParseLimits(settings.max_file_chars, settings.max_unzipped_mb << 20, settings.parse_timeout_s)
    parsed = pool.run(Job(name, data, strategy, settings.max_file_tokens, limits, str(settings.vocab_dir)))
    return parsed.text, parsed.bounds, parsed.tokens


@pytest.mark.parametrize("name", ["notes.txt", "notes.md", "data.json", "main.go"])
def test_small_text_is_read_here_and_matches_the_process(pool: ParserPool, settings: RetrievalSettings,
                                                         tmp_path: Path, name: str) -> None:
    data = TEXT.encode("utf-8")
    path = tmp_path / name
    path.write_bytes(data)
    strategy = ChunkingStrategy(100, 30)
    inline = pool.prepare(name, path, strategy, settings)
    assert pool.pids() == []  # no parser process was started for it
    text, bounds, tokens = _through_process(pool, settings, name, data, strategy)
    assert pool.pids() != []
    assert inline.text == text and inline.tokens == tokens
    assert inline.bounds.tolist() == bounds.tolist() and len(bounds) > 3


def test_utf16_with_bom_decodes_inline(pool: ParserPool, settings: RetrievalSettings) -> None:
    data = codecs.BOM_UTF16_LE + "Le café ouvre à sept heures.".encode("utf-16-le")
    assert pool.prepare("fr.txt", data, ChunkingStrategy(), settings).text == "Le café ouvre à sept heures."
    assert pool.pids() == []


@pytest.mark.parametrize(("name", "data", "needle"), [
    ("fake.txt", sample_file("pdf"), "is a PDF"),
    ("latin1.txt", "Caf\xe9 cr\xe8me".encode("latin-1"), "not valid UTF-8"),
    ("empty.md", b"", "empty"),
    ("blank.txt", b"   \n\n  ", "no text"),
])
def test_inline_refusals_are_the_process_refusals(pool: ParserPool, settings: RetrievalSettings, name: str,
                                                  data: bytes, needle: str) -> None:
    with pytest.raises(IngestError) as inline:
        pool.prepare(name, data, ChunkingStrategy(), settings)
    assert pool.pids() == []
    with pytest.raises(IngestError) as process:
        _through_process(pool, settings, name, data, ChunkingStrategy())
    assert inline.value.code == process.value.code == "invalid_file"
    assert inline.value.message == process.value.message and needle in inline.value.message


def test_token_limit_applies_inline(pool: ParserPool, settings: RetrievalSettings) -> None:
    small = settings.model_copy(update={"max_file_tokens": 50})
    with pytest.raises(IngestError, match="more than 50 tokens"):
        pool.prepare("words.txt", b"word " * 1000, ChunkingStrategy(), small)
    assert pool.pids() == []


def test_larger_text_and_real_formats_go_to_a_process(pool: ParserPool, settings: RetrievalSettings,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"a few words here. " * (INLINE_TEXT_MAX_BYTES // 18 + 10))  # just over the bound
    assert path.stat().st_size > INLINE_TEXT_MAX_BYTES
    assert pool.prepare("big.txt", path, ChunkingStrategy(), settings).tokens > 0
    assert len(pool.pids()) == 1
    pool.close()
    for ext in ("html", "docx"):
        fresh = ParserPool(1, 1024, 60.0, settings.vocab_dir)
        try:
            parsed = fresh.prepare(f"small.{ext}", sample_file(ext), ChunkingStrategy(), settings)
            assert "quartermaster keeps 7421" in " ".join(parsed.text.split())
            assert len(fresh.pids()) == 1, ext  # parsed in a process, small as it is
        finally:
            fresh.close()


@pytest.mark.parametrize(("name", "data", "ok"), [
    ("nested.json", b"[" * (INLINE_TEXT_MAX_BYTES // 2) + b"]" * (INLINE_TEXT_MAX_BYTES // 2), True),
    ("one_word.txt", b"a" * INLINE_TEXT_MAX_BYTES, True),
    ("combining.txt", ("a" + "\u0301" * 1000 + " ").encode() * (INLINE_TEXT_MAX_BYTES // 2004), True),
    ("newlines.md", b"\n" * (INLINE_TEXT_MAX_BYTES - 1) + b"x", True),
    ("surrogate.txt", b"ok \xed\xa0\x80 ok", False),  # a lone surrogate in UTF-8 form
    ("surrogate16.txt", codecs.BOM_UTF16_LE + "ok ".encode("utf-16-le") + b"\x00\xd8" + " ok".encode("utf-16-le"),
     False),
    ("nul.txt", b"\x00" * INLINE_TEXT_MAX_BYTES, False),
])
def test_hostile_small_text_is_bounded_inline(pool: ParserPool, settings: RetrievalSettings, name: str,
                                              data: bytes, ok: bool) -> None:
    """Read in the server's own thread, with no process timeout around it: what a hostile
    small text can do must be bounded by its size (at most 0.6 s here, measured; 10 s allowed)
    and end in text or a clear refusal."""
    started = time.monotonic()
    if ok:
        parsed = pool.prepare(name, data, ChunkingStrategy(), settings)
        assert parsed.tokens > 0 and len(parsed.bounds) >= 1
    else:
        with pytest.raises(IngestError) as refused:
            pool.prepare(name, data, ChunkingStrategy(), settings)
        assert refused.value.code == "invalid_file"
    assert time.monotonic() - started < 10
    assert pool.pids() == []
