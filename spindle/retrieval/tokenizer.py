"""o200k_base token counting and token→character mapping, fully offline.

The vocabulary file is built once by ``scripts/setup_retrieval.sh`` (see ``vocab_build``);
this module only reads it. It never touches the network: tiktoken's own registry would try
to download the file, so the ``Encoding`` is constructed directly from the local ranks.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tiktoken

PIECE_CHARS = 1 << 20  # characters encoded at once by ``encode_bounded``
_lock = threading.Lock()
_cache: dict[Path, O200k] = {}


class VocabularyMissing(RuntimeError):
    """The o200k_base file is absent: the setup script has not been run."""


class O200k:
    """The o200k_base encoding plus a per-token byte-length table for fast offset maths."""

    def __init__(self, vocab_dir: Path) -> None:
        ranks_path = vocab_dir / "o200k_base.tiktoken"
        meta_path = vocab_dir / "o200k_base.json"
        if not ranks_path.is_file() or not meta_path.is_file():
            raise VocabularyMissing(
                f"o200k_base vocabulary not found in {vocab_dir}; run scripts/setup_retrieval.sh"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ranks: dict[bytes, int] = {}
        for line in ranks_path.read_bytes().splitlines():
            if line:
                token, rank_text = line.split()
                ranks[base64.b64decode(token)] = int(rank_text)
        special = {str(k): int(v) for k, v in meta["special_tokens"].items()}
        self.encoding = tiktoken.Encoding(
            "o200k_base", pat_str=meta["pat_str"], mergeable_ranks=ranks, special_tokens=special
        )
        lengths = np.zeros(self.encoding.n_vocab, dtype=np.int64)
        for token_bytes, token_rank in ranks.items():
            lengths[token_rank] = len(token_bytes)
        self._byte_lengths = lengths

    def encode(self, text: str) -> list[int]:
        """Tokens of ``text``; special-token text is treated as ordinary text."""
        return self.encoding.encode_ordinary(text)

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def encode_bounded(self, text: str, limit: int, piece_chars: int = PIECE_CHARS) -> np.ndarray | None:
        """Tokens of ``text`` (int32), or ``None`` as soon as there are more than ``limit``.

        The text is encoded piece by piece, so a huge text costs one piece's token list at a
        time and stops at the limit instead of being tokenized whole first. Pieces end just
        before a space that follows a non-space: no o200k pre-token spans such a point, so the
        tokens are exactly those of the whole text. A piece with no such point (one endless
        "word") is cut hard at ``piece_chars``; only the few tokens around the cut can differ.
        """
        parts: list[np.ndarray] = []
        total = 0
        start = 0
        while start < len(text):
            end = _piece_end(text, start, piece_chars)
            tokens = np.asarray(self.encoding.encode_ordinary(text[start:end]), dtype=np.int32)
            total += len(tokens)
            if total > limit:
                return None
            parts.append(tokens)
            start = end
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def char_offsets(self, text: str, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Character offset where each token starts, plus ``len(text)`` at the end.

        A token that begins inside a multi-byte character is assigned the next character
        boundary, so slicing ``text`` between offsets never splits a character."""
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        is_start = (raw & 0xC0) != 0x80
        # chars_before[b] = characters starting before byte b; for a byte inside a character
        # that already counts the character, i.e. it is the index of the next boundary.
        chars_before = np.concatenate(([0], np.cumsum(is_start)))
        lengths = self._byte_lengths[np.asarray(tokens, dtype=np.int64)]
        byte_starts = np.minimum(np.concatenate(([0], np.cumsum(lengths))), len(raw))
        offsets: np.ndarray = chars_before[byte_starts]
        return offsets


def _piece_end(text: str, start: int, piece_chars: int) -> int:
    """Where the piece of ``text`` that begins at ``start`` ends (see ``encode_bounded``)."""
    limit = start + piece_chars
    if limit >= len(text):
        return len(text)
    floor = start + piece_chars // 2
    cut = text.rfind(" ", floor, limit)
    while cut > start:
        if not text[cut - 1].isspace():
            return cut
        cut = text.rfind(" ", floor, cut)
    return limit


def load(vocab_dir: Path) -> O200k:
    """The process-wide encoding for ``vocab_dir`` (built once; ~1 s)."""
    with _lock:
        enc = _cache.get(vocab_dir)
        if enc is None:
            enc = O200k(vocab_dir)
            _cache[vocab_dir] = enc
        return enc
