"""Decoding of plain-text files: UTF-8, UTF-16 (either byte order, with or without BOM), ASCII.

File Search accepts only these encodings. A file in any other encoding (Latin-1, Shift-JIS...)
or a binary blob with a text extension fails with ``invalid_file`` rather than being indexed
as mojibake: a UTF-16 file without a BOM is recognised by its NUL bytes, never guessed from
text that merely fails to decode as UTF-8.
"""

from __future__ import annotations

import codecs
import re

from spindle.retrieval.errors import invalid

_SAMPLE = 8192
# Controls other than tab, LF, VT, FF, CR: their presence in bulk means "binary".
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


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


def decode_text(data: bytes) -> str:
    """The text of ``data`` with newlines normalised, or ``IngestError(invalid_file)``."""
    if data.startswith(codecs.BOM_UTF8):
        encoding, body = "utf-8", data[3:]
    elif data.startswith(codecs.BOM_UTF16_LE):
        encoding, body = "utf-16-le", data[2:]
    elif data.startswith(codecs.BOM_UTF16_BE):
        encoding, body = "utf-16-be", data[2:]
    else:
        encoding, body = _utf16_without_bom(data) or "utf-8", data
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise invalid(
            f"The file is not valid UTF-8, UTF-16 or ASCII text ({encoding} failed at byte {exc.start})."
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(_CONTROL.findall(text[:_SAMPLE])) > 0.02 * min(len(text), _SAMPLE) + 1:
        raise invalid("The file looks binary, not text.")
    return text
