"""The parser process: reads files for the server, one at a time, under a memory limit.

    python -m spindle.retrieval.parsers.worker FD MEMORY_BYTES VOCAB_DIR

(started by ``spindle.retrieval.parsers.pool``; ``FD`` is its end of a socket pair).

Everything a hostile document can blow up happens here, never in the server: expanding a
ZIP package, walking a PDF page tree, decoding, counting tokens, cutting chunks. The server
(``spindle.retrieval.parsers.pool``) sends a ``Job`` and gets back the text and its chunk
bounds, or an error; it kills this process when a file takes too long, and a crash here
(a C library's segfault, an allocation failure past ``RLIMIT_AS``) costs that file only.

Replies are plain frames (a JSON header, the UTF-8 text, the bounds as int64), not pickles:
the server does not unpickle what a process that parsed hostile bytes sends back.
"""

from __future__ import annotations

import json
import logging
import resource
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from spindle.retrieval import tokenizer
from spindle.retrieval.chunker import ChunkingStrategy, chunk_bounds
from spindle.retrieval.errors import IngestError, invalid
from spindle.retrieval.parsers import ParseLimits, parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One file to read: its bytes (or the path to read them from) and every limit that applies."""

    filename: str
    source: str | bytes
    strategy: ChunkingStrategy
    max_tokens: int
    limits: ParseLimits
    vocab_dir: str

    def header(self) -> dict[str, object]:
        """The job as a JSON-able dict; bytes given inline follow it as a second frame."""
        return {
            "filename": self.filename,
            "path": self.source if isinstance(self.source, str) else None,
            "max_chunk_size_tokens": self.strategy.max_chunk_size_tokens,
            "chunk_overlap_tokens": self.strategy.chunk_overlap_tokens,
            "max_tokens": self.max_tokens,
            "max_chars": self.limits.max_chars,
            "max_unzipped": self.limits.max_unzipped,
            "converter_timeout_s": self.limits.converter_timeout_s,
            "vocab_dir": self.vocab_dir,
        }

    @classmethod
    def receive(cls, conn: Connection) -> Job:
        head = json.loads(conn.recv_bytes())
        source = head["path"] if head["path"] is not None else conn.recv_bytes()
        return cls(
            head["filename"], source,
            ChunkingStrategy(head["max_chunk_size_tokens"], head["chunk_overlap_tokens"]),
            head["max_tokens"],
            ParseLimits(head["max_chars"], head["max_unzipped"], head["converter_timeout_s"]),
            head["vocab_dir"],
        )


def prepare_text(job: Job) -> tuple[str, np.ndarray, int]:
    """``(text, bounds, n_tokens)`` of a file; ``bounds`` is ``(n, 4)`` int64 rows of
    ``token_start, token_end, char_start, char_end``. Raises ``IngestError``."""
    if isinstance(job.source, bytes):
        data = job.source
    else:
        try:
            data = Path(job.source).read_bytes()
        except OSError as exc:
            raise IngestError("server_error", f"The file's bytes could not be read: {exc.strerror}") from None
    text = parse(job.filename, data, job.limits)
    del data
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (a PDF's broken ToUnicode map): one "?" each
        text = text.encode("utf-8", "replace").decode("utf-8")
    enc = tokenizer.load(Path(job.vocab_dir))
    tokens = enc.encode_bounded(text, job.max_tokens)
    if tokens is None:
        raise invalid(f"The file has more than {job.max_tokens:,} tokens; that is the limit per file.")
    bounds = np.asarray(chunk_bounds(enc, text, job.strategy, tokens), dtype=np.int64).reshape(-1, 4)
    return text, bounds, len(tokens)


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _send(conn: Connection, header: dict[str, object], *frames: bytes) -> None:
    conn.send_bytes(json.dumps(header).encode("utf-8"))
    for frame in frames:
        conn.send_bytes(frame)


def serve(conn: Connection, memory_bytes: int) -> None:
    """The process's main loop: answer jobs until the server closes the connection."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the server, which stops us
    # The limit is on top of what the process already maps (the preloaded libraries and the
    # vocabulary, shared with the fork server), so it means the same whatever they weigh.
    start_kb = _status_kb("VmSize")
    limit = start_kb * 1024 + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    baseline_rss_kb = _status_kb("VmRSS")
    conn.send_bytes(b"ready")
    while True:
        try:
            job = Job.receive(conn)
        except (EOFError, OSError):
            return
        retire = False
        payload: tuple[bytes, ...]
        try:
            text, bounds, n_tokens = prepare_text(job)
            payload = (text.encode("utf-8"), bounds.tobytes())
            del text, bounds
            header: dict[str, object] = {"ok": True, "tokens": n_tokens, "chunks": len(payload[1]) // 32}
        except IngestError as exc:
            payload = ()
            header = {"ok": False, "code": exc.code, "message": exc.message}
        except MemoryError:
            payload = ()
            retire = True  # the heap may be left fragmented and large: start afresh
            header = {"ok": False, "code": "invalid_file",
                      "message": f"Reading the file needs more than {memory_bytes >> 20:,} MB of memory; "
                                 "that is the limit per file."}
        except RecursionError:
            payload = ()
            header = {"ok": False, "code": "invalid_file", "message": "The file is nested too deeply to read."}
        except Exception:  # a parser library's bug on some input: that file fails, the process lives on
            log.exception("unexpected error reading %s", job.filename)
            payload = ()
            retire = True
            header = {"ok": False, "code": "server_error",
                      "message": "The server had an error while processing the file."}
        # glibc keeps freed memory mapped; a process that grew a lot for one file is replaced
        # rather than carried around at that size.
        if _status_kb("VmRSS") - baseline_rss_kb > (memory_bytes >> 10) // 2:
            retire = True
        header["retire"] = retire
        try:
            _send(conn, header, *payload)
        except (BrokenPipeError, OSError):
            return
        del payload
        if retire:
            return


def warm_up(vocab_dir: Path) -> None:
    """Import and initialise the parser libraries before the memory limit applies (they map
    their code and tables once; the limit is meant for what a file makes them allocate)."""
    import bs4  # noqa: F401
    import charset_normalizer  # noqa: F401
    import docx  # noqa: F401
    import pptx  # noqa: F401
    import pypdfium2 as pdfium

    minimal = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>"
               b"endobj 3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 10 10]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF")
    try:
        document = pdfium.PdfDocument(minimal)
        page = document[0]
        page.get_textpage().close()
        page.close()
        document.close()
    except pdfium.PdfiumError:
        pass
    try:
        tokenizer.load(vocab_dir)
    except tokenizer.VocabularyMissing:
        pass  # a job then fails with the reason; the server checks the vocabulary at start anyway


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="spindle parser[%(process)d] %(levelname)s %(name)s: %(message)s")
    fd, memory_bytes, vocab_dir = int(argv[0]), int(argv[1]), Path(argv[2])
    warm_up(vocab_dir)
    serve(Connection(fd), memory_bytes)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
