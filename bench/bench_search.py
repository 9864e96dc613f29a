"""Search latency (p50/p99) at 10k, 100k and 1M chunks: hybrid, default ranker, no rewrite;
for the embedded index and for the PostgreSQL one (``--backends embedded postgres``).

Each store is a real vector store of the real app (core factory, in process): the store object
is created through the API, then its index directory is filled directly with synthetic chunks
(Zipf-distributed English words) and clustered unit vectors - embedding 1M texts on two cores
would take hours - through ``StoreIndex.add_chunks``/``add_vectors``, the calls ingestion uses.
Queries (3-6 words from the same vocabulary) are then sent to ``POST /v1/vector_stores/{id}/search``
over the ASGI transport, so every measured millisecond goes through the endpoint: request
parsing, query embedding with MiniLM, BM25 (tantivy), vectors (faiss: exact up to 100k chunks,
IVF-int8 above), exact-term and window scoring, fusion, chunk fetch. The library call alone is timed too.

With ``postgres`` the app runs on a throwaway PostgreSQL server with pgvector (tests/pgserver.py)
and the same synthetic stores are built into its index (``PgStoreIndex``: BM25 postings in SQL,
pgvector exact below 20k vectors, HNSW above, built once after the bulk load); those are
rebuilt on every run (100k chunks: ~5 minutes here).

    python bench/bench_search.py                 # 10k, 100k, 1M
    python bench/bench_search.py --sizes 10000   # one size
    python bench/bench_search.py --sizes 10000 100000 --backends embedded postgres

Stores are cached under --work (1M chunks take ~10 minutes to build and ~3 GB of disk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spindle.retrieval.chunker import Chunk  # noqa: E402
from spindle.retrieval.embedding import get_embedder  # noqa: E402
from spindle.retrieval.index.base import SearchIndex  # noqa: E402
from spindle.retrieval.index.store import StoreIndex  # noqa: E402
from spindle.retrieval.search import SearchOptions, search  # noqa: E402
from spindle.retrieval.settings import RetrievalSettings  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "retrieval" / "msmarco-5k" / "corpus.jsonl"
CHUNKS_PER_FILE = 100
WORDS_PER_CHUNK = 120


def vocabulary() -> list[str]:
    """Real English words, most frequent first (from the msmarco passages)."""
    counts: dict[str, int] = {}
    for line in CORPUS.read_text(encoding="utf-8").split("\n"):
        if line:
            for word in re.findall(r"[a-z]{3,}", json.loads(line)["text"].lower()):
                counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=lambda w: -counts[w])


def build(index: SearchIndex, n_chunks: int, words: list[str], dim: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1)
    zipf = 1.0 / ranks
    zipf /= zipf.sum()
    centers = rng.standard_normal((2048, dim)).astype(np.float32)
    futures = []
    started = time.perf_counter()
    for file_no in range(n_chunks // CHUNKS_PER_FILE):
        picks = rng.choice(len(words), size=(CHUNKS_PER_FILE, WORDS_PER_CHUNK), p=zipf)
        chunks = [Chunk(i, 0, WORDS_PER_CHUNK, 0, 0, " ".join(words[w] for w in row)) for i, row in enumerate(picks)]
        vectors = centers[rng.integers(0, len(centers), CHUNKS_PER_FILE)]
        vectors = vectors + 0.8 * rng.standard_normal(vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        file_id = f"file-{file_no:06d}"
        ids, ready = index.add_chunks(file_id, f"doc{file_no}.txt", {"n": file_no}, chunks)
        futures.append(ready)
        index.add_vectors(file_id, ids, vectors, 0)
        if file_no % 500 == 499:
            print(f"#   {(file_no + 1) * CHUNKS_PER_FILE:,} chunks, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)
    for ready in futures:
        ready.result()
    if isinstance(index, StoreIndex):
        index.vectors.maybe_snapshot(force=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spindle-bench-search"))
    parser.add_argument("--build-only", action="store_true", help="build the stores, measure nothing")
    parser.add_argument("--backends", nargs="+", default=["embedded"], choices=["embedded", "postgres"])
    args = parser.parse_args()
    os.environ["SPINDLE_SANDBOX_ENABLED"] = "false"
    settings = RetrievalSettings()
    words = vocabulary()
    rng = np.random.default_rng(1)
    top = words[:3000]
    queries = [" ".join(rng.choice(top, size=rng.integers(3, 7))) for _ in range(args.queries)]
    rows = []
    for backend in args.backends:
        if backend == "embedded":
            rows += measure_embedded(args, settings, words, queries)
        else:
            rows += measure_postgres(args, settings, words, queries)
    print("| index | chunks | vectors | endpoint p50 ms | endpoint p99 ms | search() p50 ms | search() p99 ms |"
          " query embedding p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, size, kind, e50, e99, l50, l99, q50, q99 in rows:
        print(f"| {backend} | {size:,} | {kind} | {e50:.1f} | {e99:.1f} | {l50:.1f} | {l99:.1f} | {q50:.1f} |"
              f" {q99:.1f} |")


def measure(http: Any, app: Any, store_id: str, queries: list[str], settings: RetrievalSettings) -> tuple[
        list[float], list[float], list[float], SearchIndex]:
    """Endpoint, library and query-embedding latencies of ``queries`` on one store."""
    body = {"query": queries[0], "max_num_results": 10}
    for _ in range(20):  # warm up: open the index, page it in, load the model
        assert http.post(f"/v1/vector_stores/{store_id}/search", json=body).status_code == 200
    endpoint = []
    for query in queries:
        t0 = time.perf_counter()
        response = http.post(f"/v1/vector_stores/{store_id}/search", json={"query": query, "max_num_results": 10})
        endpoint.append(time.perf_counter() - t0)
        assert response.status_code == 200 and response.json()["data"], response.text
    service = app.state.runtime.extensions["vector_stores"]
    index = service.indexes._open[store_id]
    embedder = service.indexes.embedder
    library, embed = [], []
    for query in queries:
        t0 = time.perf_counter()
        search([(store_id, index)], [query], embedder, settings, SearchOptions(max_num_results=10))
        library.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        embedder.embed_queries([query])
        embed.append(time.perf_counter() - t0)
    return endpoint, library, embed, index


def measure_embedded(args: argparse.Namespace, settings: RetrievalSettings, words: list[str],
                     queries: list[str]) -> list[tuple[Any, ...]]:
    from fastapi.testclient import TestClient

    from spindle.app import create_app
    from spindle.settings import ServerSettings, Settings

    embedder = get_embedder(settings)
    registry_path = args.work / "stores.json"
    args.work.mkdir(parents=True, exist_ok=True)
    stores: dict[str, str] = json.loads(registry_path.read_text()) if registry_path.exists() else {}
    rows = []
    app = create_app(Settings(server=ServerSettings(data_dir=args.work / "data")))
    with TestClient(app) as http:  # httpx over the ASGI app: no sockets, no uvicorn
        for size in args.sizes:
            store_id = stores.get(str(size))
            if store_id is None or not (args.work / "data" / "vector_stores" / store_id / "built").exists():
                store_id = http.post("/v1/vector_stores", json={"name": f"bench-{size}"}).json()["id"]
                stores[str(size)] = store_id
                registry_path.write_text(json.dumps(stores))
                directory = args.work / "data" / "vector_stores" / store_id
                print(f"# building {size:,} chunks in {directory}", file=sys.stderr, flush=True)
                index = StoreIndex(directory, settings, embedder.identity, embedder.dimensions)
                build(index, size, words, embedder.dimensions)
                index.close()
                (directory / "built").write_text("ok")
            if args.build_only:
                continue
            endpoint, library, embed, opened = measure(http, app, store_id, queries, settings)
            assert isinstance(opened, StoreIndex)
            kind = "IVF-int8" if opened.vectors.is_ivf else "exact"
            rows.append(("embedded", size, kind, *percentiles(endpoint), *percentiles(library), *percentiles(embed)))
    return rows


def measure_postgres(args: argparse.Namespace, settings: RetrievalSettings, words: list[str],
                     queries: list[str]) -> list[tuple[Any, ...]]:
    import tempfile

    from fastapi.testclient import TestClient

    from spindle.app import create_app
    from spindle.retrieval.index.pgindex import PgIndexBackend, PgStoreIndex
    from spindle.settings import ServerSettings, Settings
    from tests.pgserver import PostgresServer

    embedder = get_embedder(settings)
    server = PostgresServer().start()
    rows = []
    try:
        url = server.create_database("bench")
        with tempfile.TemporaryDirectory() as data_dir:
            app = create_app(Settings(server=ServerSettings(data_dir=Path(data_dir), database_url=url)))
            with TestClient(app) as http:
                backend = PgIndexBackend(url, embedder.identity, embedder.dimensions)
                # The build writes without pause: its HNSW index is built once, after it (below).
                backend.hnsw_max_delay_seconds = float("inf")
                for size in args.sizes:
                    store_id = http.post("/v1/vector_stores", json={"name": f"bench-{size}"}).json()["id"]
                    started = time.perf_counter()
                    print(f"# building {size:,} chunks in PostgreSQL", file=sys.stderr, flush=True)
                    index = backend.open(store_id)
                    build(index, size, words, embedder.dimensions)
                    ingested = time.perf_counter()
                    index.ensure_hnsw()  # what the background build does once writes pause
                    indexed = time.perf_counter()
                    # What autovacuum does after a bulk load (it would, a little later): statistics and
                    # the visibility map, which lets the keyword reads be index-only.
                    with backend.pool.connection() as conn:
                        conn.execute(f"VACUUM (ANALYZE) vs_index_postings, vs_index_terms, vs_index_chunks,"
                                     f" vs_index_vec_{index.key}")
                    print(f"# built in {time.perf_counter() - started:.0f} s (ingestion {ingested - started:.0f} s,"
                          f" HNSW {indexed - ingested:.0f} s, vacuum {time.perf_counter() - indexed:.0f} s)",
                          file=sys.stderr, flush=True)
                    if args.build_only:
                        continue
                    endpoint, library, embed, opened = measure(http, app, store_id, queries, settings)
                    assert isinstance(opened, PgStoreIndex)
                    kind = "HNSW" if opened.is_hnsw() else "exact"
                    rows.append(("PostgreSQL", size, kind, *percentiles(endpoint), *percentiles(library),
                                 *percentiles(embed)))
                backend.close()
    finally:
        server.stop()
    return rows


if __name__ == "__main__":
    main()
