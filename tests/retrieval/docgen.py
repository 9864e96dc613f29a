"""Real documents generated from scratch for the retrieval tests and benchmarks.

- ``make_pdf``: a multi-page PDF 1.4 written by hand (Helvetica text objects, exact xref).
- ``make_doc``: a Word 97 binary document - a compound file (CFB v3) holding a
  ``WordDocument`` stream (FIB + 8-bit text) and a ``1Table`` stream (piece table), the
  minimal structure antiword and catdoc read. No LibreOffice needed.
- ``make_docx`` / ``make_pptx``: python-docx / python-pptx.
"""

from __future__ import annotations

import io
import struct

# -- PDF ----------------------------------------------------------------------------------


def _pdf_escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]]) -> bytes:
    """One page per list of lines (Latin-1 text), Helvetica 11 pt."""
    objects: list[bytes] = []
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, lines in enumerate(pages):
        content_id = 4 + 2 * i
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        ops = ["BT", "/F1 11 Tf", "14 TL", "56 740 Td"]
        for line in lines:
            ops.append(f"({_pdf_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def wrap(text: str, width: int = 90) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return lines


# -- Word 97 (.doc) -----------------------------------------------------------------------

_SECTOR = 512
_FREE, _END, _FATSECT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
_TEXT_AT = 0x800


def _dir_entry(name: str, kind: int, start: int, size: int, left: int = _NOSTREAM, right: int = _NOSTREAM,
               child: int = _NOSTREAM) -> bytes:
    raw = name.encode("utf-16-le") + b"\0\0" if name else b""
    entry = raw.ljust(64, b"\0")
    entry += struct.pack("<HBB", len(raw), kind, 1)
    entry += struct.pack("<III", left, right, child)
    entry += b"\0" * 16 + b"\0" * 4 + b"\0" * 16
    entry += struct.pack("<IQ", start, size)
    return entry


def _word_document(text: str) -> tuple[bytes, bytes]:
    body = text.replace("\n", "\r")
    if not body.endswith("\r"):
        body += "\r"
    encoded = body.encode("cp1252", "replace")
    fib = bytearray(_TEXT_AT)
    struct.pack_into("<HHHHHH", fib, 0, 0xA5EC, 0x00C1, 0, 0x0409, 0, 0x1200)  # 1Table, fExtChar
    struct.pack_into("<H", fib, 0x0C, 0x00BF)
    struct.pack_into("<II", fib, 0x18, _TEXT_AT, _TEXT_AT + len(encoded))  # fcMin/fcMac for old readers
    struct.pack_into("<H", fib, 0x20, 14)
    struct.pack_into("<H", fib, 0x3E, 22)
    stream = bytes(fib) + encoded
    stream = stream.ljust(max(4096, len(stream) + 1), b"\0")
    struct.pack_into("<I", fib, 0x40, len(stream))  # cbMac
    struct.pack_into("<I", fib, 0x4C, len(body))  # ccpText
    struct.pack_into("<H", fib, 0x98, 0x5D)
    # piece table: one piece, 8-bit ("compressed") text at _TEXT_AT
    plc = struct.pack("<II", 0, len(body)) + struct.pack("<HIH", 0, (_TEXT_AT * 2) | 0x40000000, 0)
    clx = b"\x02" + struct.pack("<I", len(plc)) + plc
    struct.pack_into("<II", fib, 0x9A + 33 * 8, 0, len(clx))  # fcClx, lcbClx
    stream = bytes(fib) + stream[_TEXT_AT:]
    table = clx.ljust(4096, b"\0")
    return stream, table


def make_doc(text: str) -> bytes:
    """A Word 97 .doc holding ``text`` (paragraphs separated by newlines)."""
    word, table = _word_document(text)
    n_word = -(-len(word) // _SECTOR)
    n_table = -(-len(table) // _SECTOR)
    word_start, table_start = 2, 2 + n_word
    total = table_start + n_table
    if total > _SECTOR // 4:
        raise ValueError("document too large for the single-FAT-sector writer")
    fat = [_FREE] * (_SECTOR // 4)
    fat[0] = _FATSECT
    fat[1] = _END
    for start, count in ((word_start, n_word), (table_start, n_table)):
        for i in range(count):
            fat[start + i] = start + i + 1 if i < count - 1 else _END
    header = bytearray(_SECTOR)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 0x18, 0x003E, 0x0003, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIIII", header, 0x28, 0, 1, 1, 0, 0x1000, _END, 0, _END, 0)
    difat = [0] + [_FREE] * 108
    struct.pack_into("<109I", header, 0x4C, *difat)
    directory = (
        _dir_entry("Root Entry", 5, _END, 0, child=1)
        + _dir_entry("WordDocument", 2, word_start, len(word), left=2)
        + _dir_entry("1Table", 2, table_start, len(table))
        + _dir_entry("", 0, 0, 0)
    )
    out = bytes(header) + struct.pack("<128I", *fat) + directory
    out += word.ljust(n_word * _SECTOR, b"\0") + table.ljust(n_table * _SECTOR, b"\0")
    return out


# -- Office Open XML ------------------------------------------------------------------------


def make_docx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_pptx(slides: list[tuple[str, str]], notes: str | None = None) -> bytes:
    import pptx

    presentation = pptx.Presentation()
    for title, body in slides:
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()
