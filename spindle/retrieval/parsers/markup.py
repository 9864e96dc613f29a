"""HTML to text: visible text in document order, scripts and styles dropped.

The bytes are decoded here, by HTML's own rules (WHATWG "determining the character
encoding"), not left to the parser's guess: a BOM; else a ``<meta charset>`` or
``http-equiv`` declaration in the first 1,024 bytes; else UTF-8 when the bytes are valid
UTF-8; else a detector (charset-normalizer). Labels mean what browsers make them mean
(``iso-8859-1`` and ``ascii`` are windows-1252). Among the single-byte code pages the detector
cannot tell apart on a short text (it rates cp1250 and cp1252 the same for "très"), the
windows-1252 default browsers use for Western pages wins.
"""

from __future__ import annotations

import codecs
import re

from bs4 import BeautifulSoup

from spindle.retrieval.errors import invalid
from spindle.retrieval.parsers.text import looks_binary, refuse_binary

_BLANK_RUNS = re.compile(r"\n\s*\n\s*\n+")
_PRESCAN = 1024
_META_CHARSET = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:\-]+)", re.IGNORECASE)
# Python codec names browsers treat as windows-1252 (WHATWG Encoding: the "windows-1252" labels).
_AS_CP1252 = {"latin_1", "ascii", "cp1252", "iso8859_1"}
# Single-byte code pages the detector confuses with windows-1252 on short Western texts.
_LATIN_SIBLINGS = {"cp1250", "cp1252", "cp1257", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4",
                   "iso8859_9", "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16",
                   "mac_roman", "mac_latin2", "cp850", "cp852", "cp858", "hp_roman8", "cp775"}


def _codec(label: str) -> str | None:
    """The Python codec for an HTML charset label, as browsers interpret the label."""
    try:
        name = codecs.lookup(label.strip().lower()).name.replace("-", "_")
    except LookupError:
        return None
    if name in _AS_CP1252:
        return "cp1252"
    if name.startswith("utf_16"):  # a meta tag cannot declare UTF-16 (it would not be readable): UTF-8
        return "utf_8"
    return name


def _detect(data: bytes) -> str | None:
    import charset_normalizer  # imported lazily: only for HTML that declares nothing and is not UTF-8

    matches = list(charset_normalizer.from_bytes(data[:1_000_000]))
    if not matches:
        return None
    best = matches[0]
    if best.encoding in _LATIN_SIBLINGS:
        for match in matches:
            if match.encoding == "cp1252" and match.chaos <= best.chaos + 0.01:
                return "cp1252"
    return str(best.encoding)


def decode_html(data: bytes) -> str:
    """The text of an HTML file's bytes, decoded by HTML's rules (see the module docstring)."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding)
            except UnicodeDecodeError as exc:
                raise invalid(f"The HTML is not valid {encoding.upper()} (failed at byte {exc.start}).") from None
    refuse_binary(data, "HTML")
    declared = _META_CHARSET.search(data[:_PRESCAN])
    if declared is not None:
        label = _codec(declared.group(1).decode("ascii", "replace"))
        if label is not None:
            try:
                return data.decode(label)
            except UnicodeDecodeError:
                pass  # a wrong declaration: find out what the bytes really are
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    detected = _detect(data)
    if detected is None:
        raise invalid("The HTML's character encoding could not be determined (no charset and not text).")
    return data.decode(detected, "replace")


def html_to_text(data: bytes) -> str:
    markup = decode_html(data)
    if looks_binary(markup):
        raise invalid("The file looks binary, not HTML.")
    try:
        soup = BeautifulSoup(markup, "lxml")
    except Exception as exc:  # lxml raises assorted parser errors on garbage
        raise invalid(f"The HTML could not be parsed: {exc}") from None
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    text = soup.get_text("\n")
    lines = (line.strip() for line in text.splitlines())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
