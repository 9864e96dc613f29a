"""PDF text extraction with pypdfium2 (PDFium, the engine of Chrome's viewer).

PDFium is not thread-safe, so every call into it holds one process-wide lock; a PDF takes
milliseconds per page, so the serialisation costs little next to embedding.
"""

from __future__ import annotations

import threading

from spindle.retrieval.errors import invalid

_pdfium_lock = threading.Lock()


def pdf_to_text(data: bytes) -> str:
    import pypdfium2 as pdfium

    if not data.lstrip()[:5].startswith(b"%PDF"):
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
            for index in range(len(document)):
                page = document[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        pages.append(textpage.get_text_range())
                    finally:
                        textpage.close()
                finally:
                    page.close()
        except pdfium.PdfiumError as exc:
            raise invalid(f"The PDF is corrupt: {exc}") from None
        finally:
            document.close()
    text = "\n\n".join(p.replace("\r\n", "\n").replace("\r", "\n").strip() for p in pages)
    return text
