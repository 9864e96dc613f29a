"""Parser processes (``spindle.retrieval.parsers.pool``): a crash, a timeout or a memory
overrun costs one file and the pool carries on; token counting stops at the limit."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from spindle.retrieval import tokenizer
from spindle.retrieval.chunker import ChunkingStrategy, chunk_text
from spindle.retrieval.errors import IngestError
from spindle.retrieval.parsers.pool import ParserPool
from spindle.retrieval.settings import RetrievalSettings
from tests.retrieval.hostile import one_line_text, pdf_page_tree_bomb
from tests.retrieval.test_parsers import sample_file


@pytest.fixture
def pool(settings: RetrievalSettings) -> ParserPool:
    parsers = ParserPool(1, 1024, 60.0, settings.vocab_dir)
    yield parsers
    parsers.close()


def _parser_children() -> list[int]:
    """Pids of this process's parser processes (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"spindle.retrieval.parsers.worker" in cmdline:
            found.append(int(entry.name))
    return found


# Files meant to reach a parser process are .html here: a small .txt is decoded in the calling
# thread (tests/retrieval/test_ingest_inline.py) and would pass without any process.
def _prepare(pool: ParserPool, settings: RetrievalSettings, name: str, data: bytes | Path) -> object:
    return pool.prepare(name, data, ChunkingStrategy(), settings)


def test_chunks_from_the_process_match_the_in_process_chunker(pool: ParserPool, settings: RetrievalSettings) -> None:
    text = " ".join(f"Sentence {i} tells of harbours, ships and the tides of the northern sea." for i in range(900))
    parsed = pool.prepare("long.md", text.encode(), ChunkingStrategy(200, 50), settings)
    enc = tokenizer.load(settings.vocab_dir)
    expected = chunk_text(enc, text, ChunkingStrategy(200, 50))
    assert parsed.text == text and parsed.tokens == len(enc.encode(text))
    assert [tuple(row) for row in parsed.bounds.tolist()] == [
        (c.token_start, c.token_end, c.char_start, c.char_end) for c in expected]


def test_a_path_is_read_by_the_process(pool: ParserPool, settings: RetrievalSettings, tmp_path: Path) -> None:
    path = tmp_path / "notes.html"  # not plain text: small .txt files are decoded inline (test_ingest_inline)
    path.write_bytes(b"<p>The cartographer inks the coastline.</p>")
    text = pool.prepare("notes.html", path, ChunkingStrategy(), settings).text
    assert text == "The cartographer inks the coastline." and len(pool.pids()) == 1


def test_a_crashed_parser_fails_that_file_and_the_next_gets_a_new_process(
        pool: ParserPool, settings: RetrievalSettings) -> None:
    outcome: list[BaseException | object] = []
    worker = threading.Thread(target=lambda: outcome.append(_catch(pool, settings, "pages.pdf", pdf_page_tree_bomb())))
    worker.start()
    deadline = time.monotonic() + 20
    while not pool.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the process is now inside PDFium
    victim = pool.pids()[0]
    os.kill(victim, signal.SIGSEGV)
    worker.join(30)
    error = outcome[0]
    assert isinstance(error, IngestError) and error.code == "invalid_file"
    assert "crashed (SIGSEGV)" in error.message
    assert victim not in _parser_children()  # reaped
    assert _prepare(pool, settings, "after.html", b"The ferry leaves at noon.").text == "The ferry leaves at noon."


def _catch(pool: ParserPool, settings: RetrievalSettings, name: str, data: bytes) -> BaseException | object:
    try:
        return _prepare(pool, settings, name, data)
    except IngestError as exc:
        return exc


def test_a_slow_file_is_killed_at_the_time_limit(settings: RetrievalSettings) -> None:
    pool = ParserPool(1, 1024, 1.0, settings.vocab_dir)
    try:
        started = time.monotonic()
        error = _catch(pool, settings, "pages.pdf", pdf_page_tree_bomb())
        assert isinstance(error, IngestError) and error.code == "invalid_file"
        assert "longer than 1 s" in error.message
        assert time.monotonic() - started < 10
        assert _prepare(pool, settings, "after.html", b"Still reading files.").text == "Still reading files."
    finally:
        pool.close()


def test_a_file_past_the_memory_limit_fails_alone(settings: RetrievalSettings) -> None:
    pool = ParserPool(1, 48, 60.0, settings.vocab_dir)
    try:
        error = _catch(pool, settings, "big.txt", one_line_text(24 << 20))
        assert isinstance(error, IngestError) and error.code == "invalid_file"
        assert "memory" in error.message or "crashed" in error.message, error.message
        assert _prepare(pool, settings, "after.html", b"Small files still pass.").text == "Small files still pass."
    finally:
        pool.close()


def test_token_limit_is_reported(pool: ParserPool, settings: RetrievalSettings) -> None:
    small = settings.model_copy(update={"max_file_tokens": 1000})
    error = _catch_settings(pool, small, "words.txt", one_line_text(200_000))
    assert isinstance(error, IngestError) and error.code == "invalid_file"
    assert "more than 1,000 tokens" in error.message


def _catch_settings(pool: ParserPool, settings: RetrievalSettings, name: str, data: bytes) -> object:
    try:
        return pool.prepare(name, data, ChunkingStrategy(), settings)
    except IngestError as exc:
        return exc


def test_every_format_through_the_process(pool: ParserPool, settings: RetrievalSettings) -> None:
    for ext in ("pdf", "docx", "pptx", "doc", "html", "go"):
        parsed = pool.prepare(f"sample.{ext}", sample_file(ext), ChunkingStrategy(), settings)
        assert "quartermaster keeps 7421" in " ".join(parsed.text.split()), ext


# -- incremental token counting -----------------------------------------------------------------


def test_bounded_encoding_is_exact_and_stops_at_the_limit(settings: RetrievalSettings,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    enc = tokenizer.load(settings.vocab_dir)
    text = "Zoë's café — 東京 🎉 don't  stop\n\n  123456 " * 20_000 + "x" * 1500
    assert enc.encode_bounded(text, 10**9, piece_chars=4096).tolist() == enc.encode(text)
    calls: list[int] = []
    real = enc.encoding.encode_ordinary
    monkeypatch.setattr(enc.encoding, "encode_ordinary", lambda piece: calls.append(len(piece)) or real(piece))
    huge = "word " * 2_000_000  # 10 M characters
    assert enc.encode_bounded(huge, 1000) is None
    assert len(calls) == 1 and calls[0] <= tokenizer.PIECE_CHARS  # one piece encoded, not the whole text


def test_the_parser_process_gets_no_secrets(settings: RetrievalSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINDLE_API_KEYS", "sk-secret:team")
    monkeypatch.setenv("SPINDLE_LLM_API_KEY", "sk-upstream-secret")
    pool = ParserPool(1, 1024, 60.0, settings.vocab_dir)
    try:
        pool.warm()
        (pid,) = pool.pids()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"sk-secret" not in environ and b"sk-upstream-secret" not in environ
        assert b"PATH=" in environ
        assert _prepare(pool, settings, "a.html", b"Still works.").text == "Still works."
    finally:
        pool.close()
