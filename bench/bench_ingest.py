"""Ingestion throughput on generated multi-page documents, against the embedder's own ceiling.

Documents: PDF (hand-written PDF 1.4), DOCX (python-docx), HTML, Markdown and TXT, each of
``--pages`` pages of English prose (sentences from the msmarco passages). They go through
``spindle.retrieval.pipeline.ingest`` - parse, o200k chunking (auto: 800/400), keyword index,
MiniLM embedding of whole chunks, vector index - with ``ingest_concurrency`` files at once,
as the vector store worker runs them.

The ceiling is the embedding model alone on raw full-size windows (254 word pieces + CLS/SEP)
cut from the same texts, through the same batching runner. Pipeline throughput is counted in
the same unit (word pieces of document text per second), so their ratio is the pipeline's
efficiency: parsing, tokenising, indexing and scheduling overhead.

    python bench/bench_ingest.py [--docs 30] [--pages 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spindle.retrieval.chunker import ChunkingStrategy  # noqa: E402
from spindle.retrieval.embedding import get_embedder  # noqa: E402
from spindle.retrieval.embedding.local import LocalEmbedder  # noqa: E402
from spindle.retrieval.index.store import StoreIndex  # noqa: E402
from spindle.retrieval.parsers import parse  # noqa: E402
from spindle.retrieval.pipeline import IngestResult, ingest  # noqa: E402
from spindle.retrieval.settings import RetrievalSettings  # noqa: E402
from tests.retrieval.docgen import make_docx, make_pdf, wrap  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "retrieval" / "msmarco-5k" / "corpus.jsonl"
WORDS_PER_PAGE = 450
KINDS = ("pdf", "docx", "html", "md", "txt")


def sentences() -> list[str]:
    out = []
    for line in CORPUS.read_text(encoding="utf-8").split("\n"):
        if line:
            out.extend(s.strip() + "." for s in json.loads(line)["text"].split(". ") if len(s) > 30)
    return out


def page_text(rng: random.Random, pool: list[str]) -> str:
    words, parts = 0, []
    while words < WORDS_PER_PAGE:
        sentence = rng.choice(pool)
        parts.append(sentence)
        words += len(sentence.split())
    return " ".join(parts)


def make_document(kind: str, pages: list[str]) -> bytes:
    if kind == "pdf":
        return make_pdf([wrap(p.encode("latin-1", "replace").decode("latin-1")) for p in pages])
    if kind == "docx":
        return make_docx([para for p in pages for para in (p[: len(p) // 2], p[len(p) // 2 :])])
    if kind == "html":
        body = "".join(f"<section><h2>Page {i + 1}</h2><p>{p}</p></section>" for i, p in enumerate(pages))
        return f"<html><body>{body}</body></html>".encode()
    if kind == "md":
        return "\n\n".join(f"## Page {i + 1}\n\n{p}" for i, p in enumerate(pages)).encode()
    return "\n\f\n".join(pages).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--pages", type=int, default=8)
    args = parser.parse_args()
    settings = RetrievalSettings()
    embedder = get_embedder(settings)
    assert isinstance(embedder, LocalEmbedder), "the ceiling is measured for the local model"
    embedder.warm_up()
    model = embedder._ensure()[0]

    rng = random.Random(3)
    pool = sentences()
    docs = []
    for i in range(args.docs):
        kind = KINDS[i % len(KINDS)]
        docs.append((f"doc{i:03d}.{kind}", make_document(kind, [page_text(rng, pool) for _ in range(args.pages)])))
    total_bytes = sum(len(data) for _, data in docs)
    texts = [parse(name, data) for name, data in docs]
    pieces = [model.word_pieces([t])[0] for t in texts]
    total_pieces = sum(len(p) for p in pieces)

    # -- the embedder's ceiling: full windows of the same text, same runner ----------------
    window = model.window
    windows = [np.asarray(p[i : i + window], dtype=np.int64) for p in pieces for i in range(0, len(p) - window + 1, window)]
    embedder.embed_windows(windows[:16])  # warm
    t0 = time.perf_counter()
    embedder.embed_windows(windows)
    ceiling_s = time.perf_counter() - t0
    ceiling = sum(len(w) for w in windows) / ceiling_s

    # -- the pipeline ------------------------------------------------------------------------
    work = Path(tempfile.mkdtemp(prefix="spindle-bench-ingest-"))
    index = StoreIndex(work / "vs_bench", settings, embedder.identity, embedder.dimensions)
    results: list[IngestResult] = []
    started = time.perf_counter()

    def one(item: tuple[int, tuple[str, bytes]]) -> IngestResult:
        i, (name, data) = item
        return ingest(index, embedder, f"file-{i}", name, data, {}, ChunkingStrategy(), settings)

    with ThreadPoolExecutor(settings.ingest_concurrency) as pool_:
        results = list(pool_.map(one, enumerate(docs)))
    wall = time.perf_counter() - started
    index.close()
    chunks = sum(r.chunks for r in results)
    tokens = sum(r.tokens for r in results)
    pipeline = total_pieces / wall
    kw = sorted(r.keyword_ready_s for r in results)
    done = sorted(r.total_s for r in results)

    info = embedder.info()
    print(f"# {args.docs} docs x {args.pages} pages ({', '.join(KINDS)}), {total_bytes / 1e6:.2f} MB, "
          f"{tokens:,} o200k tokens, {chunks:,} chunks, {total_pieces:,} word pieces; "
          f"embedder {info['dtype']} on {info['threads']} threads, {settings.ingest_concurrency} files at once")
    print("| metric | value |")
    print("|---|---|")
    print(f"| wall time, all files | {wall:.1f} s |")
    print(f"| chunks / s | {chunks / wall:.1f} |")
    print(f"| MB / s (input files) | {total_bytes / 1e6 / wall:.3f} |")
    print(f"| pages / s | {args.docs * args.pages / wall:.2f} |")
    print(f"| keyword-searchable after (per file p50 / p90 / last) | {statistics.median(kw):.2f} / "
          f"{kw[int(0.9 * (len(kw) - 1))]:.2f} / {kw[-1]:.2f} s |")
    print(f"| fully embedded after (per file p50 / p90 / last) | {statistics.median(done):.2f} / "
          f"{done[int(0.9 * (len(done) - 1))]:.2f} / {done[-1]:.2f} s |")
    print(f"| embedder ceiling (raw {window}-piece windows) | {ceiling:,.0f} word pieces/s |")
    print(f"| pipeline, end to end | {pipeline:,.0f} word pieces/s |")
    print(f"| pipeline / ceiling | {100 * pipeline / ceiling:.0f} % |")


if __name__ == "__main__":
    main()
