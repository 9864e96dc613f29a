"""File formats File Search reads, and ``parse`` which turns a file's bytes into text.

The format is chosen by the file name's extension (case-insensitive), as OpenAI does; a name
whose extension is not listed is ``unsupported_file``. A listed extension whose bytes do not
hold what it promises is ``invalid_file``. Parsing is blocking: call it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from spindle.retrieval.errors import invalid, unsupported
from spindle.retrieval.parsers.legacy_doc import doc_to_text
from spindle.retrieval.parsers.markup import html_to_text
from spindle.retrieval.parsers.office import docx_to_text, pptx_to_text
from spindle.retrieval.parsers.pdf import pdf_to_text
from spindle.retrieval.parsers.text import decode_text


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


def parse(filename: str, data: bytes, converter_timeout_s: float = 120.0) -> str:
    """The text of a file. Raises ``IngestError`` (unsupported_file / invalid_file)."""
    fmt = format_of(filename)
    if fmt is None:
        suffix = PurePosixPath(filename).suffix or "(none)"
        raise unsupported(f"Files of type {suffix} are not supported by file_search.")
    if not data:
        raise invalid("The file is empty.")
    readers: dict[str, Callable[[bytes], str]] = {
        "text": decode_text,
        "html": html_to_text,
        "pdf": pdf_to_text,
        "docx": docx_to_text,
        "pptx": pptx_to_text,
        "doc": lambda raw: doc_to_text(raw, converter_timeout_s),
    }
    text = readers[fmt.kind](data)
    if not text.strip():
        raise invalid("The file contains no text.")
    return text
