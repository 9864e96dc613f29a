"""File formats File Search reads, and ``parse`` which turns a file's bytes into text.

The format is chosen by the file name's extension (case-insensitive), as OpenAI does; a name
whose extension is not listed is ``unsupported_file``. A listed extension whose bytes do not
hold what it promises is ``invalid_file``. Parsing is blocking, and the bytes are hostile:
the server never calls ``parse`` itself but runs it in a parser process with memory and time
limits (``spindle.retrieval.parsers.pool``); ``ParseLimits`` bounds what it expands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from spindle.retrieval.errors import invalid, unsupported
from spindle.retrieval.parsers.legacy_doc import doc_to_text
from spindle.retrieval.parsers.markup import html_to_text
from spindle.retrieval.parsers.office import DEFAULT_MAX_UNZIPPED, docx_to_text, pptx_to_text
from spindle.retrieval.parsers.pdf import pdf_to_text
from spindle.retrieval.parsers.text import decode_text


@dataclass(frozen=True)
class ParseLimits:
    """What one file may expand to while being read (the defaults of ``RetrievalSettings``)."""

    max_chars: int = 40_000_000
    max_unzipped: int = DEFAULT_MAX_UNZIPPED
    converter_timeout_s: float = 120.0


@dataclass(frozen=True)
class Format:
    extension: str
    mime_type: str
    kind: str  # "text", "html", "pdf", "docx", "pptx", "doc"


_TABLE = [
    ("c", "text/x-c", "text"),
    ("cs", "text/x-csharp", "text"),
    ("cpp", "text/x-c++", "text"),
    ("doc", "application/msword", "doc"),
    ("go", "text/x-golang", "text"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    ("html", "text/html", "html"),
    ("java", "text/x-java", "text"),
    ("json", "application/json", "text"),
    ("md", "text/markdown", "text"),
    ("pdf", "application/pdf", "pdf"),
    ("php", "text/x-php", "text"),
    ("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
    ("py", "text/x-python", "text"),
    ("rb", "text/x-ruby", "text"),
    ("tex", "text/x-tex", "text"),
    ("txt", "text/plain", "text"),
    ("css", "text/css", "text"),
    ("js", "text/javascript", "text"),
    ("sh", "application/x-sh", "text"),
    ("ts", "application/typescript", "text"),
]
FORMATS: dict[str, Format] = {ext: Format(ext, mime, kind) for ext, mime, kind in _TABLE}


def format_of(filename: str) -> Format | None:
    """The format for ``filename``, or ``None`` when File Search does not read that type."""
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower().lstrip(".")
    return FORMATS.get(suffix)


def parse(filename: str, data: bytes, limits: ParseLimits | None = None) -> str:
    """The text of a file. Raises ``IngestError`` (unsupported_file / invalid_file)."""
    limits = limits or ParseLimits()
    fmt = format_of(filename)
    if fmt is None:
        suffix = PurePosixPath(filename).suffix or "(none)"
        raise unsupported(f"Files of type {suffix} are not supported by file_search.")
    if not data:
        raise invalid("The file is empty.")
    readers: dict[str, Callable[[bytes], str]] = {
        "text": lambda raw: decode_text(raw, limits.max_chars),
        "html": html_to_text,
        "pdf": lambda raw: pdf_to_text(raw, limits.max_chars),
        "docx": lambda raw: docx_to_text(raw, limits.max_unzipped),
        "pptx": lambda raw: pptx_to_text(raw, limits.max_unzipped),
        "doc": lambda raw: doc_to_text(raw, limits.converter_timeout_s),
    }
    text = readers[fmt.kind](data)
    if len(text) > limits.max_chars:
        raise invalid(f"The file has {len(text):,} characters of text; the limit is {limits.max_chars:,} per file.")
    if not text.strip():
        raise invalid("The file contains no text.")
    return text
