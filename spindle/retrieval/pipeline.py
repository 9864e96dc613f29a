"""Ingestion of one file into one store: parse → chunk → (keyword-searchable) → embed → index.

Blocking; the vector store worker runs it in a thread. Re-running it for a file replaces
whatever an interrupted earlier run left, which is what makes resuming after a restart safe.
Parsing, token counting and chunk cutting run in a parser process (``parsers.pool``): this
process only receives the text and its chunk bounds, within the per-file limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spindle.retrieval.chunker import Chunk, ChunkingStrategy
from spindle.retrieval.embedding import Embedder
from spindle.retrieval.errors import invalid
from spindle.retrieval.index.base import SearchIndex
from spindle.retrieval.parsers.pool import ParserPool, pool_for
from spindle.retrieval.settings import RetrievalSettings


@dataclass
class Prepared:
    text: str
    chunks: list[Chunk]
    tokens: int


@dataclass
class IngestResult:
    chunks: int
    tokens: int
    usage_bytes: int
    keyword_ready_s: float  # seconds from start until keyword-searchable
    total_s: float


def prepare(filename: str, source: Path | bytes, strategy: ChunkingStrategy, settings: RetrievalSettings,
            parsers: ParserPool | None = None) -> Prepared:
    """Parse and chunk (in a parser process); raises ``IngestError`` for files the user must fix.
    ``source`` is the file's bytes or, better, its path: the parser process reads it itself."""
    parsed = (parsers or pool_for(settings)).prepare(filename, source, strategy, settings)
    text = parsed.text
    chunks = [Chunk(i, t0, t1, c0, c1, text[c0:c1]) for i, (t0, t1, c0, c1) in enumerate(parsed.bounds.tolist())]
    if not chunks:
        raise invalid("The file contains no text.")
    return Prepared(text, chunks, parsed.tokens)


def usage_bytes(prepared: Prepared, dim: int) -> int:
    """What the store keeps for a file: chunk text plus one float32 vector per chunk."""
    return sum(len(c.text.encode("utf-8")) for c in prepared.chunks) + len(prepared.chunks) * dim * 4


def held_bytes(prepared: Prepared) -> int:
    """Memory held for a parsed file while it is embedded: its text plus the chunk copies."""
    return len(prepared.text) + sum(len(c.text) for c in prepared.chunks)


def ingest(
    index: SearchIndex,
    embedder: Embedder,
    file_id: str,
    filename: str,
    source: Path | bytes,
    attributes: dict[str, Any],
    strategy: ChunkingStrategy,
    settings: RetrievalSettings,
    on_keyword_ready: Callable[[], None] | None = None,
    parsers: ParserPool | None = None,
    on_prepared: Callable[[int], None] | None = None,
) -> IngestResult:
    """``on_prepared(bytes)`` is told how much text this file holds in memory once it is
    parsed (its text and chunk copies), so a caller bounding memory can correct its estimate."""
    started = time.perf_counter()
    prepared = prepare(filename, source, strategy, settings, parsers)
    if on_prepared is not None:
        on_prepared(held_bytes(prepared))
    ids, searchable = index.add_chunks(file_id, filename, attributes, prepared.chunks)
    keyword_ready: list[float] = []

    def mark(_: object) -> None:
        keyword_ready.append(time.perf_counter() - started)
        if on_keyword_ready is not None:
            on_keyword_ready()

    searchable.add_done_callback(mark)
    vectors = embedder.embed_chunks(prepared.text, prepared.chunks)
    used = usage_bytes(prepared, vectors.shape[1])
    index.add_vectors(file_id, ids, vectors, used)
    searchable.result()  # re-raises a failed commit
    # A future's done-callbacks run after result() can already return: mark() may not have run yet.
    done_s = time.perf_counter() - started
    return IngestResult(len(ids), prepared.tokens, used, keyword_ready[0] if keyword_ready else done_s, done_s)
