"""Office Open XML documents: .docx (python-docx) and .pptx (python-pptx).

Both are ZIP packages; a corrupt archive, a password-protected file (which is an OLE
container, not a ZIP) or a package missing its main part is ``invalid_file``.

The libraries read every part of the package into memory, so the package is measured first
(``check_package``): the sizes the ZIP directory declares (with the compression ratio, the
mark of a zip bomb), then the real sizes, by expanding each part in bounded pieces and
discarding them. Only a package that passed both reaches python-docx/python-pptx.
"""

from __future__ import annotations

import io
import logging
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from spindle.retrieval.errors import invalid

log = logging.getLogger(__name__)


# A part may expand at most this much; real Office XML compresses 5-30x, a bomb ~1000x.
MAX_RATIO = 200
_RATIO_FLOOR = 16 << 20  # parts smaller than this are never called bombs
_PIECE = 1 << 20  # bytes of output per inflate call
_FEED = 64 << 10  # bytes of compressed input per inflate call (its unconsumed tail is copied)
DEFAULT_MAX_UNZIPPED = 512 << 20


def _expanded_size(data: bytes, member: zipfile.ZipInfo, budget: int, kind: str) -> int:
    """The real uncompressed size of ``member``, counted without keeping it; stops (and
    refuses the file) once past ``budget``."""
    if member.flag_bits & 0x1:
        raise invalid(f"The {kind} file has encrypted parts.")
    if member.compress_type == zipfile.ZIP_STORED:
        return member.compress_size
    if member.compress_type != zipfile.ZIP_DEFLATED:
        raise invalid(f"The {kind} file uses a compression Office documents do not use.")
    offset = member.header_offset
    if data[offset:offset + 4] != b"PK\x03\x04":
        raise invalid(f"The {kind} file is corrupt: {member.filename} has no local header.")
    name_len, extra_len = struct.unpack("<HH", data[offset + 26:offset + 30])
    start = offset + 30 + name_len + extra_len
    raw = memoryview(data)[start:start + member.compress_size]
    inflater = zlib.decompressobj(-15)
    total = 0
    for at in range(0, len(raw), _FEED):
        pending: bytes | memoryview = raw[at:at + _FEED]
        while pending:
            total += len(inflater.decompress(pending, _PIECE))
            if total > budget:
                raise invalid(f"The {kind} file expands past the size limit ({member.filename} alone "
                              f"passes {total / (1 << 20):,.0f} MB).")
            pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    return total


def check_package(data: bytes, kind: str, max_unzipped: int = DEFAULT_MAX_UNZIPPED) -> None:
    """Refuse a ZIP package that is not one, or that would expand past ``max_unzipped`` bytes."""
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise invalid(f"The {kind} file is encrypted (password-protected) or in a legacy format.")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise invalid(f"The {kind} file is corrupt (not a valid ZIP package).")
    limit_mb = max_unzipped / (1 << 20)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            declared = sum(m.file_size for m in members)
            if declared > max_unzipped:
                raise invalid(f"The {kind} file would expand to {declared / (1 << 20):,.0f} MB; "
                              f"the limit is {limit_mb:,.0f} MB.")
            for member in members:
                if member.file_size > _RATIO_FLOOR and member.file_size > MAX_RATIO * max(member.compress_size, 1):
                    raise invalid(f"The {kind} file looks like a zip bomb: {member.filename} expands "
                                  f"{member.file_size / max(member.compress_size, 1):,.0f}-fold.")
            # The directory can lie (zipfile stops at the declared size, but decompresses a
            # whole input block at once before cutting): expand every part in bounded pieces.
            total = 0
            for member in members:
                real = _expanded_size(data, member, max_unzipped - total, kind)
                if real != member.file_size:
                    raise invalid(f"The {kind} file is corrupt: {member.filename} does not have the size "
                                  "its ZIP directory declares.")
                total += real
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, NotImplementedError, EOFError,
            ValueError, OSError) as exc:
        raise invalid(f"The {kind} file is corrupt: {type(exc).__name__}: {exc}") from None


def _table_rows(table: Any) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            value = cell.text.strip()
            # merged cells repeat the same object; keep one copy
            if not cells or cells[-1] != value:
                cells.append(value)
        if any(cells):
            yield " | ".join(cells)


def docx_to_text(data: bytes, max_unzipped: int = DEFAULT_MAX_UNZIPPED) -> str:
    check_package(data, "docx", max_unzipped)
    import docx  # imported lazily: only needed when such a file arrives

    try:
        document = docx.Document(io.BytesIO(data))
        parts: list[str] = []
        for block in document.iter_inner_content():
            if hasattr(block, "rows"):
                parts.extend(_table_rows(block))
            else:
                parts.append(block.text)
        for section in document.sections:
            for para in section.header.paragraphs + section.footer.paragraphs:
                if para.text.strip():
                    parts.append(para.text)
    except Exception as exc:
        # Everything in the try block is the library walking untrusted bytes; a damaged
        # package surfaces as any exception type (KeyError, AttributeError, XMLSyntaxError).
        log.info("unreadable docx", exc_info=True)
        raise invalid(f"The docx file is corrupt: {type(exc).__name__}: {exc}") from None
    return "\n".join(parts)


def _shape_texts(shapes: Any) -> Iterator[str]:
    for shape in shapes:
        # a group shape; shape_type is asked only then (it raises for a shape without geometry)
        if hasattr(shape, "shapes") and shape.shape_type is not None:
            yield from _shape_texts(shape.shapes)
            continue
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text
            if text.strip():
                yield text
        if getattr(shape, "has_table", False) and shape.has_table:
            yield from _table_rows(shape.table)


def pptx_to_text(data: bytes, max_unzipped: int = DEFAULT_MAX_UNZIPPED) -> str:
    check_package(data, "pptx", max_unzipped)
    import pptx

    try:
        presentation = pptx.Presentation(io.BytesIO(data))
        parts: list[str] = []
        for number, slide in enumerate(presentation.slides, start=1):
            texts = list(_shape_texts(slide.shapes))
            if slide.has_notes_slide:
                notes = slide.notes_slide.notes_text_frame
                if notes is not None and notes.text.strip():
                    texts.append(notes.text)
            if texts:
                parts.append(f"Slide {number}\n" + "\n".join(texts))
    except Exception as exc:
        # Everything in the try block is the library walking untrusted bytes; a damaged
        # package surfaces as any exception type (KeyError, AttributeError, XMLSyntaxError).
        log.info("unreadable pptx", exc_info=True)
        raise invalid(f"The pptx file is corrupt: {type(exc).__name__}: {exc}") from None
    return "\n\n".join(parts)
