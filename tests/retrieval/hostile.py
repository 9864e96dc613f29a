"""Hostile documents, generated on the spot (never checked in): the attacks of issue 7 part B.

- ``zip_bomb``: a real docx/pptx (python-docx/python-pptx) whose main part is replaced by an
  XML document of ``expanded`` bytes, deflated to ~1/1000 of that. The deflate stream is built
  from one compressed block repeated (each ends with a full flush, so it does not refer back),
  so making a 2 GB bomb takes a second, not a minute of zlib.
- ``pdf_page_tree_bomb``: a PDF of ~1.3 KB whose page tree shares its nodes, ``fanout**levels``
  pages that are all the same small page of text.
- ``one_line_text``: a text of ``size`` bytes without a single newline.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from tests.retrieval.docgen import make_docx, make_pptx

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_A = "http://schemas.openxmlformats.org/drawingml/2006/main"
_P = "http://schemas.openxmlformats.org/presentationml/2006/main"


def _repeated_deflate(prefix: bytes, unit: bytes, repeats: int, suffix: bytes) -> tuple[bytes, int, int]:
    """Raw deflate of ``prefix + unit * repeats + suffix`` with its CRC-32 and size."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = packer.compress(prefix) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(unit) + packer.flush(zlib.Z_FULL_FLUSH)
    tail = packer.compress(suffix) + packer.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(repeats):
        crc = zlib.crc32(unit, crc)
    crc = zlib.crc32(suffix, crc)
    return head + block * repeats + tail, crc & 0xFFFFFFFF, len(prefix) + len(unit) * repeats + len(suffix)


def _write_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A ZIP of ``(name, raw deflate data, crc, uncompressed size, declared size)`` members."""
    out = io.BytesIO()
    central = []
    for name, raw, crc, _size, declared in members:
        encoded = name.encode()
        offset = out.tell()
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(raw), declared,
                              len(encoded), 0) + encoded)
        out.write(raw)
        central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(raw),
                                   declared, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start,
                          start, 0))
    return out.getvalue()


def zip_bomb(kind: str = "docx", expanded: int = 2 << 30, declared: int | None = None) -> bytes:
    """A ``kind`` package ("docx"/"pptx") whose main XML part expands to ``expanded`` bytes.
    ``declared`` (default: the truth) is the size its ZIP directory claims."""
    if kind == "docx":
        base, part = make_docx(["seed"]), "word/document.xml"
        prefix = f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{_W}"><w:body><w:p><w:r><w:t>'
        suffix = "</w:t></w:r></w:p></w:body></w:document>"
    else:
        base, part = make_pptx([("Seed", "seed")]), "ppt/slides/slide1.xml"
        prefix = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:sld xmlns:a="{_A}" xmlns:p="{_P}">'
                  '<p:cSld><p:spTree><p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/></p:nvGrpSpPr>'
                  '<p:grpSpPr/><p:sp><p:nvSpPr><p:cNvPr id="2" name="Text"/><p:cNvSpPr/><p:nvPr/></p:nvSpPr>'
                  "<p:spPr><a:prstGeom prst=\"rect\"/></p:spPr><p:txBody><a:bodyPr/><a:p><a:r><a:t>")
        suffix = "</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"
    unit = b"A" * (1 << 20)
    members = []
    with zipfile.ZipFile(io.BytesIO(base)) as package:
        for info in package.infolist():
            if info.filename == part:
                raw, crc, size = _repeated_deflate(prefix.encode(), unit, max(1, expanded >> 20), suffix.encode())
            else:
                body = package.read(info.filename)
                packer = zlib.compressobj(6, zlib.DEFLATED, -15)
                raw, crc, size = packer.compress(body) + packer.flush(), zlib.crc32(body), len(body)
            members.append((info.filename, raw, crc, size, size if declared is None or info.filename != part
                            else declared))
    return _write_zip(members)


def pdf_page_tree_bomb(levels: int = 5, fanout: int = 10, lines: int = 12) -> bytes:
    """A PDF whose page tree has ``fanout**levels`` leaves, every one the same page object."""
    text = b"\n".join(b"(The quick brown fox jumps over the lazy dog %d) Tj T*" % i for i in range(lines))
    content = b"BT /F1 9 Tf 11 TL 40 760 Td " + text + b" ET"
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>"}
    for level in range(levels):
        number = 2 + level
        kids = " ".join([f"{number + 1} 0 R"] * fanout)
        parent = f"/Parent {number - 1} 0 R " if level else ""
        objects[number] = f"<< /Type /Pages {parent}/Kids [{kids}] /Count {fanout ** (levels - level)} >>".encode()
    leaf = 2 + levels
    objects[leaf] = (f"<< /Type /Page /Parent {leaf - 1} 0 R /MediaBox [0 0 612 792] /Contents {leaf + 1} 0 R "
                     f"/Resources << /Font << /F1 {leaf + 2} 0 R >> >> >>").encode()
    objects[leaf + 1] = b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"
    objects[leaf + 2] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number in sorted(objects):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def one_line_text(size: int = 100 << 20) -> bytes:
    """``size`` bytes of words separated by spaces, no newline (~``size / 5`` o200k tokens)."""
    unit = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    return (unit * (size // len(unit) + 1))[:size]
