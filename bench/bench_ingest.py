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
    python bench/bench_ingest.py --small 2000 [--http]

``--small N``: the many-small-files case - N files of one msmarco paragraph each. The ceiling
is the model alone on exactly those paragraphs (one window each, submitted at once, packed
by length); the pipeline runs ``ingest`` with ``ingest_concurrency`` files at once, and the
table splits its thread time into stages (parse+chunk, chunk rows, keyword commit wait,
embedding, vector rows). ``--http`` also sends the same files through the real app
in-process: ``files.create`` for each, then ``file_batches.create_and_poll`` in batches of 500,
until every file is searchable (upload handling, ledger writes, the ingestion worker).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
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


def paragraphs(n: int) -> list[str]:
    out = []
    for line in CORPUS.read_text(encoding="utf-8").split("\n"):
        if line:
            out.append(json.loads(line)["text"].strip())
    return out[:n]


class Stages:
    """Thread-seconds spent in each stage of ``ingest`` (wrappers around the calls it makes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = __import__("threading").Lock()

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)


def small_files(n: int, http: bool) -> None:
    import spindle.retrieval.pipeline as pipeline_mod
    from spindle.retrieval.index.store import StoreIndex as Store

    settings = RetrievalSettings()
    embedder = get_embedder(settings)
    assert isinstance(embedder, LocalEmbedder), "the ceiling is measured for the local model"
    embedder.warm_up()
    model = embedder._ensure()[0]
    texts = paragraphs(n)
    pieces = [np.asarray(p[: model.window], dtype=np.int64) for p in model.word_pieces(texts)]
    total_pieces = sum(len(p) for p in pieces)
    embedder.embed_windows(pieces[:64])  # warm
    t0, c0 = time.perf_counter(), time.process_time()
    embedder.embed_windows(pieces)
    ceiling_s = time.perf_counter() - t0
    # CPU, unlike wall time, hardly depends on what else the machine runs: the model's own
    # CPU per paragraph, subtracted from the server's CPU per file, is the ingestion path's.
    model_cpu = (time.process_time() - c0) / n

    stages = Stages()
    stages.wrap(pipeline_mod, "prepare", "parse + tokenise + chunk")
    stages.wrap(Store, "add_chunks", "chunk rows (SQLite) + queue keyword")
    stages.wrap(embedder, "embed_chunks", "embedding (wait for the runner)")
    stages.wrap(Store, "add_vectors", "vector rows (SQLite) + faiss add")
    work = Path(tempfile.mkdtemp(prefix="spindle-bench-small-"))
    index = StoreIndex(work / "vs_small", settings, embedder.identity, embedder.dimensions)
    commit_wait = [0.0]

    def one(item: tuple[int, str]) -> IngestResult:
        i, text = item
        result = ingest(index, embedder, f"file-{i}", f"p{i}.txt", text.encode(), {}, ChunkingStrategy(), settings)
        return result

    started = time.perf_counter()
    with ThreadPoolExecutor(settings.ingest_concurrency) as pool_:
        results = list(pool_.map(one, enumerate(texts)))
    wall = time.perf_counter() - started
    commits = getattr(index.keyword, "commits", None)  # counted since h-ingest2
    index.close()
    accounted = sum(stages.seconds.values())
    commit_wait[0] = max(0.0, sum(r.total_s for r in results) - accounted)
    info = embedder.info()
    print(f"# {n} small files (one msmarco paragraph each), {total_pieces:,} word pieces; embedder {info['dtype']} "
          f"on {info['threads']} threads, {settings.ingest_concurrency} files at once; load {os.getloadavg()[0]:.1f}")
    print("| metric | value |\n|---|---|")
    print(f"| embedder ceiling, these paragraphs at once | {n / ceiling_s:.1f} files/s "
          f"({total_pieces / ceiling_s:,.0f} word pieces/s) |")
    print(f"| pipeline (ingest, library) | {n / wall:.1f} files/s, {100 * ceiling_s / wall:.0f} % of the ceiling |")
    if commits is not None:
        print(f"| pipeline: keyword commits for the {n} files | {commits} |")
    per_file = {label: 1000 * sec / n for label, sec in stages.seconds.items()}
    per_file["keyword commit wait + rest"] = 1000 * commit_wait[0] / n
    for label, ms in sorted(per_file.items(), key=lambda kv: -kv[1]):
        print(f"| thread time per file: {label} | {ms:.1f} ms |")
    if http:
        http_wall, server_cpu, completed = small_files_http(texts)
        t0, c0 = time.perf_counter(), time.process_time()
        embedder.embed_windows(pieces)  # the ceiling again, after the server run: load drifts
        after_s = time.perf_counter() - t0
        model_cpu = (model_cpu + (time.process_time() - c0) / n) / 2
        print(f"| embedder ceiling again, after the HTTP run | {n / after_s:.1f} files/s |")
        ceiling_mid = (ceiling_s + after_s) / 2
        print(f"| HTTP: real server, SDK upload_and_poll in batches of 500, until all {completed} completed | "
              f"{n / http_wall:.1f} files/s, {100 * ceiling_mid / http_wall:.0f} % of the ceiling (mean of both) |")
        print(f"| HTTP: server CPU per file (server + parser processes) | {1000 * server_cpu / n:.1f} ms |")
        print(f"| HTTP: of which upload handling (files.create) / ingestion (500 files apart) | "
              f"{1000 * SPLIT['upload']:.1f} / {1000 * SPLIT['ingest']:.1f} ms |")
        # upload_and_poll uploads a whole batch before the batch exists: nothing can be embedded
        # during that phase, so it bounds the ratio whatever ingestion does.
        print(f"| HTTP: wall time of those 500: uploads (5 at once) / batch until completed | "
              f"{SPLIT['upload_wall']:.2f} / {SPLIT['ingest_wall']:.2f} s |")
        print(f"| embedder alone: CPU per file (process CPU of the ceiling runs, mean) | {1000 * model_cpu:.1f} ms |")
        print(f"| HTTP: server CPU per file besides the model (ingestion 500 apart - model) | "
              f"{1000 * (SPLIT['ingest'] - model_cpu):.1f} ms |")
    print(f"| load average (1 min) at the end | {os.getloadavg()[0]:.1f} |")


SPLIT: dict[str, float] = {}  # server CPU seconds per file: upload handling, ingestion
PROFILE: dict[str, str] = {}  # --profile: where py-spy writes the server's stacks


def start_profiler(path: str | None, pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server and its parser processes (``--profile``); py-spy is a
    developer tool, not a dependency: ``$PY_SPY`` or ``py-spy`` on the PATH."""
    if not path:
        return None
    exe = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy ($PY_SPY or on the PATH)")
    return subprocess.Popen([exe, "record", "-p", str(pid), "--subprocesses", "-r", "100", "--gil", "-f", "raw",
                             "-o", path, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(spy: subprocess.Popen[bytes], path: str) -> None:
    spy.send_signal(signal.SIGINT)
    spy.wait(60)
    print_profile(Path(path))


# Where a sampled stack's CPU is counted: the first bucket (in this order) with a frame in it.
_BUCKETS = [
    ("parse, tokenise, chunk (parsers/worker.py: in a parser process, or inline for small text)",
     ("parsers/worker.py",)),
    ("parser round trip, server side (parsers/pool.py)", ("parsers/pool.py",)),
    ("embedding model (torch)", ("embedding/local.py",)),
    ("keyword index (tantivy add + commit)", ("index/keyword.py",)),
    ("chunk store (SQLite)", ("index/chunkstore.py",)),
    ("vectors (faiss)", ("index/vectors.py",)),
    ("metadata store writes/reads", ("spindle/store/",)),
    ("ingestion worker / ledger / claims", ("vector_stores/ingestion.py", "vector_stores/ledger.py",
                                            "vector_stores/claims.py")),
    ("HTTP: files / vector store API", ("spindle/api/", "spindle/services/", "vector_stores/service.py")),
    ("HTTP server (uvicorn, starlette)", ("uvicorn", "starlette", "fastapi", "h11")),
    ("pipeline (chunk objects, usage)", ("retrieval/pipeline.py",)),
    ("event loop, other", ("",)),
]


def print_profile(path: Path) -> None:
    """Samples per bucket from py-spy's raw (collapsed) output: ``frame;frame;... count``."""
    totals: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        bucket = next(name for name, marks in _BUCKETS
                      if any(mark in frame for frame in reversed(frames) for mark in marks))
        totals[bucket] = totals.get(bucket, 0) + int(count)
    total = sum(totals.values()) or 1
    print(f"| profile ({path}): share of sampled CPU | |")
    for name, count in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| profile: {name} | {100 * count / total:.1f} % |")


def small_files_http(texts: list[str], batch_size: int = 500) -> tuple[float, float, int]:
    """A real ``spindle serve`` process (SQLite, local blobs, sandbox off) and the official SDK:
    ``vector_stores.file_batches.upload_and_poll`` for each batch of ``batch_size`` files, one
    batch after the other, as a user would. Returns the wall time until the last batch is
    completed, the time the server process spent on CPU, and the files completed."""
    import psutil

    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    import harness

    data_dir = Path(tempfile.mkdtemp(prefix="spindle-bench-small-http-"))
    server = harness.start_server(None, data_dir / "data", {"SPINDLE_SANDBOX_ENABLED": "false"},
                                  log_path=data_dir / "server.log")
    try:
        client = harness.make_client("openai", server.base_url, timeout=600.0)
        vs = client.vector_stores.create(name="small")
        # the first file loads the model in the server: not part of the measurement
        warm = client.vector_stores.file_batches.upload_and_poll(vector_store_id=vs.id,
                                                                 files=[("warm.txt", b"warm up")])
        assert warm.file_counts.completed == 1, warm.file_counts
        assert server.child is not None and server.child.process is not None
        proc = psutil.Process(server.child.process.pid)

        def cpu() -> float:  # the server and its parser processes
            return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])

        cpu0 = cpu()
        completed = 0
        spy = start_profiler(PROFILE.get("path"), proc.pid)
        started = time.perf_counter()
        for start in range(0, len(texts), batch_size):
            files = [(f"p{i}.txt", text.encode()) for i, text in enumerate(texts[start : start + batch_size], start)]
            batch = client.vector_stores.file_batches.upload_and_poll(vector_store_id=vs.id, files=files,
                                                                      poll_interval_ms=100)
            assert batch.file_counts.completed == len(files), batch.file_counts
            completed += batch.file_counts.completed
        wall = time.perf_counter() - started
        total_cpu = cpu() - cpu0
        if spy is not None:
            stop_profiler(spy, PROFILE["path"])
        # Where the server's CPU goes: the first batch again into a second store, uploads (5 at
        # once, as upload_and_poll does) and ingestion measured apart.
        from concurrent.futures import ThreadPoolExecutor as Pool

        part = texts[:batch_size]
        second = client.vector_stores.create(name="small-split")
        c0, w0 = cpu(), time.perf_counter()
        with Pool(5) as pool:
            ids = list(pool.map(lambda item: client.files.create(file=(f"q{item[0]}.txt", item[1].encode()),
                                                                 purpose="assistants").id, enumerate(part)))
        c1, w1 = cpu(), time.perf_counter()
        batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=second.id, file_ids=ids,
                                                                  poll_interval_ms=100)
        assert batch.file_counts.completed == len(ids), batch.file_counts
        c2, w2 = cpu(), time.perf_counter()
        SPLIT.update(upload=(c1 - c0) / len(part), ingest=(c2 - c1) / len(part), upload_wall=w1 - w0,
                     ingest_wall=w2 - w1)
        return wall, total_cpu, completed
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--small", type=int, default=0, metavar="N", help="the many-small-files case")
    parser.add_argument("--http", action="store_true", help="with --small: also through the HTTP API")
    parser.add_argument("--profile", metavar="PATH", help="with --http: py-spy the server, raw stacks to PATH")
    args = parser.parse_args()
    if args.profile:
        PROFILE["path"] = args.profile
    if args.small:
        small_files(args.small, args.http)
        return
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
