"""Token-window chunking as the Assistants API defines it.

``auto`` is 800 o200k_base tokens with 400 of overlap; ``static`` lets the caller choose
``max_chunk_size_tokens`` (100-4096) and ``chunk_overlap_tokens`` (at most half of it).
Chunk text is cut from the original string at token boundaries mapped to characters, so
a chunk never splits a character and the text shown in citations is the file's own text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spindle.retrieval.tokenizer import O200k

AUTO_SIZE = 800
AUTO_OVERLAP = 400


class InvalidChunking(Exception):
    """A ``chunking_strategy`` the API rejects; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ChunkingStrategy:
    max_chunk_size_tokens: int = AUTO_SIZE
    chunk_overlap_tokens: int = AUTO_OVERLAP

    @classmethod
    def from_request(cls, value: Any, param: str = "chunking_strategy") -> ChunkingStrategy:
        """Validate a request's ``chunking_strategy`` (``None`` or ``{"type": "auto"}`` = auto)."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InvalidChunking("chunking_strategy must be an object.", param)
        kind = value.get("type")
        if kind == "auto":
            return cls()
        if kind != "static":
            raise InvalidChunking("chunking_strategy.type must be 'auto' or 'static'.", f"{param}.type")
        static = value.get("static")
        if not isinstance(static, dict):
            raise InvalidChunking("A static chunking_strategy needs a 'static' object.", f"{param}.static")
        size = static.get("max_chunk_size_tokens")
        overlap = static.get("chunk_overlap_tokens")
        if not isinstance(size, int) or isinstance(size, bool) or not 100 <= size <= 4096:
            raise InvalidChunking(
                "max_chunk_size_tokens must be an integer between 100 and 4096.",
                f"{param}.static.max_chunk_size_tokens",
            )
        if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0 or overlap > size // 2:
            raise InvalidChunking(
                "chunk_overlap_tokens must be a non-negative integer not exceeding half of max_chunk_size_tokens.",
                f"{param}.static.chunk_overlap_tokens",
            )
        return cls(size, overlap)

    def to_object(self) -> dict[str, Any]:
        """The ``chunking_strategy`` shown on a vector store file (auto is reported as static)."""
        return {
            "type": "static",
            "static": {
                "max_chunk_size_tokens": self.max_chunk_size_tokens,
                "chunk_overlap_tokens": self.chunk_overlap_tokens,
            },
        }


@dataclass(frozen=True)
class Chunk:
    index: int
    token_start: int
    token_end: int
    char_start: int
    char_end: int
    text: str

    @property
    def n_tokens(self) -> int:
        return self.token_end - self.token_start


def token_windows(n_tokens: int, strategy: ChunkingStrategy) -> list[tuple[int, int]]:
    """``[start, end)`` token ranges of the chunks of a text of ``n_tokens`` tokens."""
    size, overlap = strategy.max_chunk_size_tokens, strategy.chunk_overlap_tokens
    if n_tokens == 0:
        return []
    step = size - overlap
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + size, n_tokens)
        windows.append((start, end))
        if end >= n_tokens:
            return windows
        start += step


def chunk_bounds(enc: O200k, text: str, strategy: ChunkingStrategy,
                 tokens: Sequence[int] | np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(token_start, token_end, char_start, char_end)`` of each chunk of ``text`` (whose
    tokens are ``tokens``); windows holding only whitespace are left out."""
    offsets = enc.char_offsets(text, tokens)
    bounds: list[tuple[int, int, int, int]] = []
    for start, end in token_windows(len(tokens), strategy):
        c0, c1 = int(offsets[start]), int(offsets[end])
        if text[c0:c1].strip():
            bounds.append((start, end, c0, c1))
    return bounds


def chunk_text(enc: O200k, text: str, strategy: ChunkingStrategy,
               tokens: Sequence[int] | np.ndarray | None = None) -> list[Chunk]:
    """Split ``text`` into chunks; pass ``tokens`` when already encoded."""
    if tokens is None:
        tokens = enc.encode(text)
    return [Chunk(i, t0, t1, c0, c1, text[c0:c1])
            for i, (t0, t1, c0, c1) in enumerate(chunk_bounds(enc, text, strategy, tokens))]
