"""Object ids with OpenAI's prefixes (``asst_``, ``thread_``, ``file-`` ...)."""

from __future__ import annotations

import os
import string
import time

_ALPHABET = string.ascii_letters + string.digits
# 62 symbols: bytes below 248 map evenly (248 = 4 * 62); the rest are skipped.
_TABLE = bytes(_ALPHABET.encode()) * 4


def new_id(prefix: str, length: int = 24) -> str:
    """A random id such as ``run_Xy3...``; ``prefix`` includes its separator (``_`` or ``-``)."""
    out = bytearray()
    while len(out) < length:
        out += bytes(_TABLE[b] for b in os.urandom(length * 2) if b < 248)
    return prefix + out[:length].decode()


def now() -> int:
    """Unix seconds, as every ``created_at`` in the API."""
    return int(time.time())
