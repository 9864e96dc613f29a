"""HTML to text: visible text in document order, scripts and styles dropped."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup

from spindle.retrieval.errors import invalid

_BLANK_RUNS = re.compile(r"\n\s*\n\s*\n+")


def html_to_text(data: bytes) -> str:
    # lxml's parser honours a BOM or <meta charset>, so the bytes go in undecoded.
    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception as exc:  # lxml raises assorted parser errors on garbage
        raise invalid(f"The HTML could not be parsed: {exc}") from None
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    text = soup.get_text("\n")
    lines = (line.strip() for line in text.splitlines())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
