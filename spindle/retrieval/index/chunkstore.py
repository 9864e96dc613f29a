"""The per-store SQLite database: files, chunk texts and the durable copy of every vector.

It is the source of truth of a store's index. The keyword index (tantivy) and the vector
index (faiss) are derived from it and can be rebuilt from it; chunk ids are never reused
(``AUTOINCREMENT``), so a stale id in a derived index can only miss, never point at the
wrong text. Vectors are kept as float16 (half the bytes, well below the model's noise).
A chunk embedded in several model windows also keeps its window vectors (``wvec``, on disk
only: search reads them for its few candidates, so the in-memory index does not grow).

One writer connection and one reader connection, each behind its own lock, in WAL mode so
searches read while a file is being written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    chunks INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    usage_bytes INTEGER NOT NULL DEFAULT 0,
    embedded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    text TEXT NOT NULL,
    vec BLOB,
    vgen INTEGER,
    wvec BLOB
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file_id, seq);
CREATE INDEX IF NOT EXISTS chunks_vgen ON chunks(vgen);
CREATE TABLE IF NOT EXISTS tombstones (chunk_id INTEGER NOT NULL, vgen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ChunkRow:
    id: int
    file_id: str
    seq: int
    text: str


class ChunkStore:
    def __init__(self, path: Path) -> None:
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer = self._connect(path)
        self._writer.executescript(_SCHEMA)
        columns = {row[1] for row in self._writer.execute("PRAGMA table_info(chunks)")}
        if "wvec" not in columns:  # a store written before window vectors were kept
            self._writer.execute("ALTER TABLE chunks ADD COLUMN wvec BLOB")
        self._reader = self._connect(path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()

    # -- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._read_lock:
            row = self._reader.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._write_lock:
            self._writer.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- writes ----------------------------------------------------------------------------
    def insert_file(
        self, file_id: str, filename: str, attributes: dict[str, Any], chunks: list[tuple[int, int, int, int, str]]
    ) -> list[int]:
        """Replace ``file_id`` with new chunks ``(seq, char_start, char_end, tokens, text)``;
        returns the new chunk ids, in order. Old chunk ids are returned by ``delete_file``."""
        with self._write_lock:
            cur = self._writer
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    "INSERT OR REPLACE INTO files(file_id, filename, attributes, chunks, tokens) VALUES (?,?,?,?,?)",
                    (file_id, filename, json.dumps(attributes), len(chunks), sum(c[3] for c in chunks)),
                )
                ids: list[int] = []
                for seq, c0, c1, tokens, text in chunks:
                    row = cur.execute(
                        "INSERT INTO chunks(file_id, seq, char_start, char_end, tokens, text) VALUES (?,?,?,?,?,?)"
                        " RETURNING id",
                        (file_id, seq, c0, c1, tokens, text),
                    ).fetchone()
                    ids.append(int(row[0]))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return ids

    def store_vectors(self, file_id: str, ids: list[int], vectors: np.ndarray, usage_bytes: int,
                      windows: list[np.ndarray | None] | None = None) -> list[bool]:
        """Persist a file's vectors (and, per chunk, its window vectors when it has several);
        returns, per chunk, whether its row still existed (a file deleted or replaced meanwhile
        has lost its rows, and its vectors must go nowhere)."""
        blobs = vectors.astype(np.float16)
        wblobs = [None if w is None or len(w) < 2 else np.asarray(w, dtype=np.float16).tobytes()
                  for w in (windows or [None] * len(ids))]
        with self._write_lock:
            cur = self._writer
            cur.execute("BEGIN IMMEDIATE")
            try:
                vgen = self._bump_vgen(cur)
                present = []
                for i, chunk_id in enumerate(ids):
                    done = cur.execute("UPDATE chunks SET vec=?, vgen=?, wvec=? WHERE id=?",
                                       (blobs[i].tobytes(), vgen, wblobs[i], chunk_id))
                    present.append(done.rowcount == 1)
                cur.execute("UPDATE files SET embedded=1, usage_bytes=? WHERE file_id=?", (usage_bytes, file_id))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return present

    @staticmethod
    def _bump_vgen(cur: sqlite3.Connection) -> int:
        row = cur.execute("SELECT value FROM meta WHERE key='vgen'").fetchone()
        vgen = (int(row[0]) if row else 0) + 1
        cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('vgen', ?)", (str(vgen),))
        return vgen

    def delete_file(self, file_id: str) -> list[int]:
        """Remove a file and its chunks; returns the removed chunk ids (tombstoned for faiss)."""
        with self._write_lock:
            cur = self._writer
            cur.execute("BEGIN IMMEDIATE")
            try:
                ids = [int(r[0]) for r in cur.execute("SELECT id FROM chunks WHERE file_id=?", (file_id,))]
                vgen = self._bump_vgen(cur)
                cur.executemany("INSERT INTO tombstones(chunk_id, vgen) VALUES (?, ?)", [(i, vgen) for i in ids])
                cur.execute("DELETE FROM chunks WHERE file_id=?", (file_id,))
                cur.execute("DELETE FROM files WHERE file_id=?", (file_id,))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return ids

    def set_attributes(self, file_id: str, attributes: dict[str, Any]) -> None:
        with self._write_lock:
            self._writer.execute("UPDATE files SET attributes=? WHERE file_id=?", (json.dumps(attributes), file_id))

    def prune_tombstones(self, up_to_vgen: int) -> None:
        with self._write_lock:
            self._writer.execute("DELETE FROM tombstones WHERE vgen<=?", (up_to_vgen,))

    # -- reads -----------------------------------------------------------------------------
    def current_vgen(self) -> int:
        value = self.get_meta("vgen")
        return int(value) if value else 0

    def files(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self._read_lock:
            rows = self._reader.execute("SELECT file_id, filename, attributes FROM files").fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def file_info(self, file_id: str) -> dict[str, Any] | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT filename, chunks, tokens, usage_bytes, embedded FROM files WHERE file_id=?", (file_id,)
            ).fetchone()
        if row is None:
            return None
        keys = ("filename", "chunks", "tokens", "usage_bytes", "embedded")
        return dict(zip(keys, row, strict=True))

    def chunk_ids_of(self, file_ids: Iterable[str]) -> np.ndarray:
        wanted = list(file_ids)
        out: list[int] = []
        with self._read_lock:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                out.extend(r[0] for r in self._reader.execute(f"SELECT id FROM chunks WHERE file_id IN ({marks})", part))
        return np.asarray(out, dtype=np.int64)

    def chunks(self, ids: list[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._read_lock:
            rows = self._reader.execute(f"SELECT id, file_id, seq, text FROM chunks WHERE id IN ({marks})", ids).fetchall()
        return {int(r[0]): ChunkRow(int(r[0]), r[1], int(r[2]), r[3]) for r in rows}

    def vectors(self, ids: list[int], dim: int) -> dict[int, np.ndarray]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT id, vec FROM chunks WHERE id IN ({marks}) AND vec IS NOT NULL", ids
            ).fetchall()
        return {int(r[0]): np.frombuffer(r[1], dtype=np.float16).astype(np.float32) for r in rows}

    def window_vectors(self, ids: list[int], dim: int) -> dict[int, np.ndarray]:
        """Per chunk, its window vectors ``(n, dim)``; a chunk of one window (or stored before
        windows were kept) gives its chunk vector as the only row."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT id, vec, wvec FROM chunks WHERE id IN ({marks}) AND vec IS NOT NULL", ids
            ).fetchall()
        return {int(r[0]): np.frombuffer(r[2] if r[2] is not None else r[1], dtype=np.float16)
                .reshape(-1, dim).astype(np.float32) for r in rows}

    def iter_texts(self, batch: int = 5_000) -> Iterator[list[tuple[int, str, str]]]:
        """``(chunk id, file id, text)`` of every chunk, in id order (to rebuild the keyword index)."""
        last_id = -1
        while True:
            with self._read_lock:
                rows = self._reader.execute(
                    "SELECT id, file_id, text FROM chunks WHERE id>? ORDER BY id LIMIT ?", (last_id, batch)
                ).fetchall()
            if not rows:
                return
            yield [(int(r[0]), str(r[1]), str(r[2])) for r in rows]
            last_id = int(rows[-1][0])

    def iter_vectors(self, after_vgen: int = 0, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` batches of every stored vector newer than ``after_vgen``."""
        last_id = -1
        while True:
            with self._read_lock:
                rows = self._reader.execute(
                    "SELECT id, vec FROM chunks WHERE vgen>? AND id>? AND vec IS NOT NULL ORDER BY id LIMIT ?",
                    (after_vgen, last_id, batch),
                ).fetchall()
            if not rows:
                return
            ids = np.asarray([r[0] for r in rows], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), -1)
            yield ids, vecs.astype(np.float32)
            last_id = int(ids[-1])

    def tombstones_after(self, vgen: int) -> np.ndarray:
        with self._read_lock:
            rows = self._reader.execute("SELECT chunk_id FROM tombstones WHERE vgen>?", (vgen,)).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def file_chunks(self, file_id: str) -> list[tuple[int, int, str]]:
        """``(char_start, char_end, text)`` of a file's chunks in order (for ``/content``)."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT char_start, char_end, text FROM chunks WHERE file_id=? ORDER BY seq", (file_id,)
            ).fetchall()
        return [(int(r[0]), int(r[1]), r[2]) for r in rows]

    def counts(self) -> tuple[int, int]:
        with self._read_lock:
            files = self._reader.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            chunks = self._reader.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(files), int(chunks)
