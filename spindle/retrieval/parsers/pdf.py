"""PDF text extraction with pypdfium2 (PDFium, the engine of Chrome's viewer).

PDFium is not thread-safe, so every call into it holds one process-wide lock. The server runs
this in its parser processes (``spindle.retrieval.parsers.pool``), each with its own PDFium, so
the lock serialises nothing across files. A few hundred bytes can describe any number of pages
(a page tree whose nodes share their kids), so the text is measured page by page and reading
stops as soon as it passes ``max_chars``.
"""

from __future__ import annotations

import threading

from spindle.retrieval.errors import invalid

_pdfium_lock = threading.Lock()


# Deflate cannot expand more than ~1,032-fold, so a PDF whose text outgrows its size a
# thousand times over is repeating shared objects (one page under every leaf of the tree).
_MAX_TEXT_RATIO = 1000
_RATIO_FLOOR_CHARS = 10_000_000


def pdf_to_text(data: bytes, max_chars: int | None = None) -> str:
    import pypdfium2 as pdfium

    if not data[:1024].lstrip()[:5].startswith(b"%PDF"):
        raise invalid("The file is not a PDF (no %PDF header).")
    with _pdfium_lock:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            reason = str(exc)
            if "password" in reason.lower():
                raise invalid("The PDF is encrypted (password-protected).") from None
            raise invalid(f"The PDF is corrupt: {reason}") from None
        try:
            pages: list[str] = []
            chars = 0
            for index in range(len(document)):
                page = document[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        pages.append(textpage.get_text_range())
                        chars += len(pages[-1])
                    finally:
                        textpage.close()
                finally:
                    page.close()
                if max_chars is not None and chars > max_chars:
                    raise invalid(f"The PDF has more than {max_chars:,} characters of text (reached on page "
                                  f"{index + 1:,} of {len(document):,}); that is the limit per file.")
                if chars > _RATIO_FLOOR_CHARS and chars > _MAX_TEXT_RATIO * len(data):
                    raise invalid(f"The PDF's text outgrows its size {_MAX_TEXT_RATIO:,}-fold by page "
                                  f"{index + 1:,} of {len(document):,}: its pages repeat shared content "
                                  "(a page-tree bomb).")
        except pdfium.PdfiumError as exc:
            raise invalid(f"The PDF is corrupt: {exc}") from None
        finally:
            document.close()
    text = "\n\n".join(p.replace("\r\n", "\n").replace("\r", "\n").strip() for p in pages)
    return text
