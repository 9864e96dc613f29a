"""``sandbox:/mnt/data/NAME`` links in the assistant's text -> ``file_path`` annotations.

The model links files its code saved (``[report](sandbox:/mnt/data/report.csv)``); OpenAI
annotates each such link with the File created from it, so clients can swap in a download
URL. Names may contain spaces or be URL-encoded; the longest known file matching at a link's
position wins, and links to files we do not know are left alone.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

PREFIX = "sandbox:/mnt/data/"
_SCHEME = "sandbox:"
# Characters that end a link in markdown or prose.
_TERMINATOR = re.compile(r"[\s)\]>\"'`]")


def annotate(text: str, files: dict[str, str]) -> list[dict[str, Any]]:
    """Annotations for every link in ``text`` to a path of ``files`` (path under /mnt/data -> file id)."""
    if not files or PREFIX not in text:
        return []
    forms: list[tuple[str, str]] = []
    for path, file_id in files.items():
        for form in {path, quote(path), quote(path, safe="/()")}:
            forms.append((PREFIX + form, file_id))
    forms.sort(key=lambda f: len(f[0]), reverse=True)
    annotations: list[dict[str, Any]] = []
    start = text.find(PREFIX)
    while start != -1:
        for link, file_id in forms:
            if text.startswith(link, start):
                end = start + len(link)
                annotations.append(
                    {
                        "type": "file_path",
                        "text": link,
                        "start_index": start,
                        "end_index": end,
                        "file_path": {"file_id": file_id},
                    }
                )
                break
        start = text.find(PREFIX, start + len(PREFIX))
    return annotations


def pending_marker(text: str) -> int | None:
    """Where a ``sandbox:`` link may still be forming at the end of streamed ``text``."""
    idx = text.rfind(_SCHEME)
    if idx != -1:
        tail = text[idx:]
        if PREFIX.startswith(tail):
            return idx
        if tail.startswith(PREFIX) and not _TERMINATOR.search(tail, len(PREFIX)):
            return idx
    # "sand", "sandbox" ... at the very end, starting a word
    for k in range(min(len(_SCHEME) - 1, len(text)), 0, -1):
        pos = len(text) - k
        if text.endswith(_SCHEME[:k]) and (pos == 0 or not text[pos - 1].isalnum()):
            return pos
    return None
