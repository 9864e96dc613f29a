"""Object ids with OpenAI's prefixes (``asst_``, ``thread_``, ``file-`` ...)."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A random id such as ``run_Xy3...``; ``prefix`` includes its separator (``_`` or ``-``)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    """Unix seconds, as every ``created_at`` in the API."""
    return int(time.time())
