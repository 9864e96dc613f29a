"""Office Open XML documents: .docx (python-docx) and .pptx (python-pptx).

Both are ZIP packages; a corrupt archive, a password-protected file (which is an OLE
container, not a ZIP) or a package missing its main part is ``invalid_file``.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator
from typing import Any

from spindle.retrieval.errors import invalid

log = logging.getLogger(__name__)


def _open_zip_check(data: bytes, kind: str) -> None:
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise invalid(f"The {kind} file is encrypted (password-protected) or in a legacy format.")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise invalid(f"The {kind} file is corrupt (not a valid ZIP package).")


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


def docx_to_text(data: bytes) -> str:
    _open_zip_check(data, "docx")
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
        if shape.shape_type is not None and hasattr(shape, "shapes"):  # group shape
            yield from _shape_texts(shape.shapes)
            continue
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text
            if text.strip():
                yield text
        if getattr(shape, "has_table", False) and shape.has_table:
            yield from _table_rows(shape.table)


def pptx_to_text(data: bytes) -> str:
    _open_zip_check(data, "pptx")
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
