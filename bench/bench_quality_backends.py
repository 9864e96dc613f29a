"""Retrieval quality of the PostgreSQL index against the embedded one, on the quality sets.

Each set is ingested once into the embedded index exactly as ``bench_quality.py`` does (and
cached in the same --work folder); its chunks, vectors and window vectors are then copied
as they are into a fresh PostgreSQL database through ``PgStoreIndex.add_chunks`` /
``add_vectors`` (the calls ingestion makes), so both indexes hold the same chunks and the same
vectors and only the index differs: BM25 in SQL vs tantivy, pgvector vs faiss. Every query
goes through ``spindle.retrieval.search.search`` on each; the table gives nDCG@10 per index,
the paired difference (PostgreSQL - embedded) with a 95% bootstrap interval, for the shipped
default and for each side alone.

    python bench/bench_quality_backends.py                      # every set
    python bench/bench_quality_backends.py --sets needles identifiers
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_quality as bq  # noqa: E402

from spindle.retrieval.chunker import Chunk  # noqa: E402
from spindle.retrieval.embedding import get_embedder  # noqa: E402
from spindle.retrieval.embedding.base import with_windows  # noqa: E402
from spindle.retrieval.index.pgindex import PgIndexBackend, PgStoreIndex  # noqa: E402
from spindle.retrieval.settings import RetrievalSettings  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

ROWS = {
    "shipped default (auto)": bq.Config(shipped=True),
    "keyword only (BM25)": bq.Config(modes=("keyword",)),
    "semantic only (MiniLM)": bq.Config(modes=("semantic",)),
}


def copy_to_postgres(directory: Path, index: PgStoreIndex, dim: int) -> int:
    """Every file of the embedded index at ``directory`` into ``index``; chunks copied."""
    db = sqlite3.connect(directory / "chunks.sqlite")
    files = db.execute("SELECT file_id, filename, attributes FROM files").fetchall()
    total = 0
    for file_id, filename, _attributes in files:
        rows = db.execute("SELECT seq, char_start, char_end, tokens, text, vec, wvec FROM chunks WHERE file_id=?"
                          " ORDER BY seq", (file_id,)).fetchall()
        chunks = [Chunk(seq, 0, tokens, c0, c1, text) for seq, c0, c1, tokens, text, _, _ in rows]
        ids, ready = index.add_chunks(file_id, filename, {}, chunks)
        ready.result()
        if rows and all(r[5] is not None for r in rows):
            vecs = np.stack([np.frombuffer(r[5], dtype=np.float16).astype(np.float32) for r in rows])
            windows = [None if r[6] is None else np.frombuffer(r[6], dtype=np.float16).reshape(-1, dim)
                       .astype(np.float32) for r in rows]
            index.add_vectors(file_id, ids, with_windows(vecs, windows), 0)
        total += len(rows)
    db.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=bq.SHARED + bq.GENERATED)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spindle-bench-quality"))
    args = parser.parse_args()
    base = RetrievalSettings()
    embedder = get_embedder(base)
    server = PostgresServer().start()
    try:
        url = server.create_database("quality")

        async def migrate() -> None:
            from spindle.store.postgres import PostgresStore

            store = PostgresStore(url)
            await store.open()
            await store.close()

        asyncio.run(migrate())
        backend = PgIndexBackend(url, embedder.identity, embedder.dimensions)
        print("| set | ranking | embedded nDCG@10 | PostgreSQL nDCG@10 | PostgreSQL - embedded [95% CI] |")
        print("|---|---|---|---|---|")
        for name in args.sets:
            data = bq.load_set(name, base)
            embedded = bq.build_index(name, data[0], base, args.work)
            pg = backend.open(f"vs_{name.replace('-', '_')}")
            started = time.perf_counter()
            n = copy_to_postgres(args.work / name, pg, embedder.dimensions)
            print(f"# {name}: {n} chunks copied to PostgreSQL in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)
            for row, config in ROWS.items():
                a = bq.evaluate(embedded, data, base, config, recall=False).ndcg  # type: ignore[arg-type]
                b = bq.evaluate(pg, data, base, config, recall=False).ndcg  # type: ignore[arg-type]
                print(f"| {name} | {row} | {bq.mean(a):.4f} | {bq.mean(b):.4f} | {bq.paired(b, a)} |", flush=True)
            embedded.close()
        backend.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
