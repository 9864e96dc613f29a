"""Copy embedded store indexes (``<data_dir>/vector_stores/<vs_id>/``) into PostgreSQL.

Used by ``spindle migrate --to postgresql://...``: after the move, a server on PostgreSQL
searches the vector stores in the database, so their indexes go there too. Each file's chunks
are copied as stored (texts, offsets, token counts, attributes) with their vectors and window
vectors, through the same ``add_chunks`` / ``add_vectors`` as ingestion - nothing is parsed or
embedded again, and the keyword postings are derived with the same analysers. The embedder
recorded with the embedded index is kept. Blocking: run it in a thread.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from spindle.retrieval.chunker import Chunk
from spindle.retrieval.embedding.base import with_windows
from spindle.retrieval.index.pgindex import PgIndexBackend


def import_embedded(directory: Path, url: str) -> tuple[int, int, list[str]]:
    """Copy the embedded index in ``directory`` (its name is the store id) into the database
    at ``url``, replacing what the database holds for those files; returns ``(files, chunks,
    problems)`` - problems are differences found when reading the copy back."""
    db = sqlite3.connect(f"file:{directory / 'chunks.sqlite'}?mode=ro", uri=True)
    try:
        meta = db.execute("SELECT value FROM meta WHERE key = 'embedder'").fetchone()
        if meta is None:
            return 0, 0, []  # never written to
        info = json.loads(meta[0])
        identity, dim = str(info["identity"]), int(info["dim"])
        backend = PgIndexBackend(url, identity, dim, max_connections=2)
        problems: list[str] = []
        files = chunks_total = 0
        try:
            index = backend.open(directory.name)
            for file_id, filename, attributes, usage in db.execute(
                    "SELECT file_id, filename, attributes, usage_bytes FROM files").fetchall():
                rows = db.execute("SELECT seq, char_start, char_end, tokens, text, vec, wvec FROM chunks"
                                  " WHERE file_id = ? ORDER BY seq", (file_id,)).fetchall()
                chunks = [Chunk(seq, 0, tokens, c0, c1, text) for seq, c0, c1, tokens, text, _, _ in rows]
                ids, ready = index.add_chunks(file_id, filename, json.loads(attributes), chunks)
                ready.result()
                if rows and all(r[5] is not None for r in rows):
                    vectors = np.stack([np.frombuffer(r[5], dtype=np.float16).astype(np.float32) for r in rows])
                    windows = [None if r[6] is None else
                               np.frombuffer(r[6], dtype=np.float16).reshape(-1, dim).astype(np.float32)
                               for r in rows]
                    index.add_vectors(file_id, ids, with_windows(vectors, windows), int(usage))
                copied = index.chunk_rows(ids)
                if [copied[i].text for i in ids if i in copied] != [r[4] for r in rows]:
                    problems.append(f"{directory.name}/{file_id}: chunk texts differ after the copy")
                files += 1
                chunks_total += len(rows)
        finally:
            backend.close()
        return files, chunks_total, problems
    finally:
        db.close()
