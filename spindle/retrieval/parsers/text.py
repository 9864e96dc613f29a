"""Decoding of plain-text files: UTF-8, UTF-16 (either byte order, with or without BOM), ASCII.

File Search accepts only these encodings. A file in any other encoding (Latin-1, Shift-JIS...)
or a binary blob with a text extension fails with ``invalid_file`` rather than being indexed
as mojibake: a UTF-16 file without a BOM is recognised by its NUL bytes, never guessed from
text that merely fails to decode as UTF-8; a BOM that contradicts the body (the other byte
order) and a known binary format under a text name (a PDF called ``.md``) are refused too.
"""

from __future__ import annotations

import codecs
import math
import re
from collections import Counter

from spindle.retrieval.errors import invalid

_SAMPLE = 8192
# Controls other than tab, LF, VT, FF, CR: their presence in bulk means "binary".
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")

# Signatures of binary formats people upload under a text name by mistake (or on purpose).
# Checked at the very start only (after a BOM or leading whitespace for the textual ones), so
# a text merely mentioning "%PDF-" is not affected.
_MAGIC: list[tuple[bytes, str]] = [
    (b"%PDF-", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive (docx, pptx, xlsx or zip)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE compound file (doc, xls, ppt or msg)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"{\\rtf", "an RTF document"),
]


def sniff_binary(data: bytes) -> str | None:
    """What binary format ``data`` starts with (``"a PDF"``...), or ``None``."""
    head = data[:1024]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    # PDF readers also accept the header after leading whitespace (or a stray BOM).
    if head.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"%PDF-"):
        return "a PDF"
    return None


def refuse_binary(data: bytes, kind: str) -> None:
    """``invalid_file`` when ``data`` is a known binary format rather than ``kind`` text."""
    found = sniff_binary(data)
    if found is not None:
        raise invalid(f"The file is {found}, not {kind} text; upload it under its own extension.")


def _utf16_without_bom(data: bytes) -> str | None:
    """``"utf-16-le"``/``"utf-16-be"`` when NULs sit on one parity, as ASCII-heavy UTF-16 does."""
    sample = data[:_SAMPLE]
    if len(sample) < 2:
        return None
    even = sample[0::2].count(0)
    odd = sample[1::2].count(0)
    half = len(sample) // 2
    if odd > 0.3 * half and even < 0.05 * half:
        return "utf-16-le"
    if even > 0.3 * half and odd < 0.05 * half:
        return "utf-16-be"
    return None


def _entropy(values: bytes) -> float:
    counts = Counter(values)
    total = len(values)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def _check_utf16_order(body: bytes, declared: str) -> None:
    """Refuse a UTF-16 body whose byte order is the opposite of its BOM's.

    Decoded in the wrong order, text stays valid UTF-16 (``A`` = U+0041 becomes U+4100, a CJK
    ideograph), so the decoder does not notice. But in real text of any script the high byte
    of each code unit (its Unicode block) varies much less than the low byte: ASCII has one
    high byte, a kana/kanji text a few dozen, against up to 256 low bytes. Swapped, it is the
    other way round.
    """
    sample = body[: _SAMPLE - (_SAMPLE % 2)]
    if len(sample) < 64:
        return
    high, low = (sample[1::2], sample[0::2]) if declared == "utf-16-le" else (sample[0::2], sample[1::2])
    if _entropy(high) > _entropy(low) + 1.0:
        other = "utf-16-be" if declared == "utf-16-le" else "utf-16-le"
        raise invalid(f"The file's byte-order mark says {declared.upper()} but its text is {other.upper()}.")


def looks_binary(text: str) -> bool:
    """Whether decoded text has control characters in a quantity no text file has."""
    return len(_CONTROL.findall(text[:_SAMPLE])) > 0.02 * min(len(text), _SAMPLE) + 1


def decode_text(data: bytes, max_chars: int | None = None) -> str:
    """The text of ``data`` with newlines normalised, or ``IngestError(invalid_file)``.

    ``max_chars`` is checked on the byte size first (a character takes at most 4 bytes in
    UTF-8 and UTF-16), so an oversized file is refused before it is decoded."""
    refuse_binary(data, "plain")
    if max_chars is not None and len(data) > 4 * max_chars:
        raise invalid(f"The file has more than {max_chars:,} characters of text; that is the limit per file.")
    if data.startswith(codecs.BOM_UTF8):
        encoding, body = "utf-8", data[3:]
    elif data.startswith(codecs.BOM_UTF16_LE):
        encoding, body = "utf-16-le", data[2:]
        _check_utf16_order(body, encoding)
    elif data.startswith(codecs.BOM_UTF16_BE):
        encoding, body = "utf-16-be", data[2:]
        _check_utf16_order(body, encoding)
    else:
        encoding, body = _utf16_without_bom(data) or "utf-8", data
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise invalid(
            f"The file is not valid UTF-8, UTF-16 or ASCII text ({encoding} failed at byte {exc.start})."
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if looks_binary(text):
        raise invalid("The file looks binary, not text.")
    if max_chars is not None and len(text) > max_chars:
        raise invalid(f"The file has {len(text):,} characters of text; the limit is {max_chars:,} per file.")
    return text
