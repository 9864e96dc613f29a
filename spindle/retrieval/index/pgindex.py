"""The vector stores' index in PostgreSQL (``SPINDLE_DATABASE_URL=postgresql://...``).

Chunks, their vectors and the keyword index live in the database (tables of migration
``0002_vector_index.sql``), so every process serving the same database searches every store,
and nothing of it sits on one machine's disk.

- **Keyword side: BM25 computed in SQL.** PostgreSQL's ``ts_rank`` is not BM25, so texts are
  analysed in Python with the embedded index's own analysers (``keyword.analyzers``: stemmed
  words and compound tokens) and stored as postings ``(chunk, field, term, tf, dl)`` plus the
  document frequency of each term and the token totals per field. A query scores with
  tantivy's BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5)), per field,
  summed; a chunk's length rounded as tantivy stores it, ``fieldnorm``). The top k is found
  in one statement (``pgkeyword``): each term's postings read best first from a covering index
  ordered by each posting's BM25 factor (``impact``) - whole for a term in at most
  ``pgkeyword.TERM_FULL`` chunks, else the best ``max(200, 4k)`` - and only the chunks that could
  still reach the top k look up the common terms they were not found with.
- **Vectors: pgvector**, one table per store (``vs_index_vec_<key>``, ``vector(dim)``):
  exact inner-product scans while the store is small, an HNSW index (``vector_ip_ops``) once it
  holds ``HNSW_MIN_VECTORS`` vectors. A search restricted by an attribute filter scans the
  allowed chunks exactly (an HNSW scan filters after the fact and can return too few).
- **Writes of one store are serialised** by a transaction-scoped advisory lock on the store,
  across processes: replacing a file, adding its vectors and deleting it each happen in one
  transaction, document frequencies never race, and no two writers deadlock.

All methods block (psycopg's synchronous pool): call them from worker threads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool

from spindle.retrieval import filters as filter_mod
from spindle.retrieval.chunker import Chunk
from spindle.retrieval.embedding.base import windows_of
from spindle.retrieval.index import pgkeyword
from spindle.retrieval.index.base import join_chunks
from spindle.retrieval.index.chunkstore import ChunkRow
from spindle.retrieval.index.keyword import RareTerms, analyzers, query_terms

log = logging.getLogger(__name__)

K1, B = 1.2, 0.75  # tantivy's BM25 constants: the embedded index scores with the same
HNSW_MIN_VECTORS = 20_000  # below it an exact scan is fast and exact; above it HNSW keeps p50 low
# The HNSW index is built in bulk once a store has crossed HNSW_MIN_VECTORS and its writes pause
# for HNSW_QUIET_SECONDS (at most HNSW_MAX_DELAY_SECONDS after the crossing): one bulk build of
# 100k vectors costs a fraction of maintaining the graph on each of the 80k inserts after 20k
# (measured in docs/decisions/h-pgindex.md). Until it exists, searches scan exactly.
HNSW_QUIET_SECONDS = 5.0
HNSW_MAX_DELAY_SECONDS = 300.0
_HNSW_BUILD_MEMORY = "1GB"  # maintenance_work_mem of a build: the graph of 100k vectors fits in it
_TERM_DEPTH_MIN = 200  # postings read of a term in more than pgkeyword.TERM_FULL chunks (at least; 4x k)
_FIELDS = {"body": 0, "exact": 1}
_FIELD_NAMES = {0: "body", 1: "exact"}
_LOCK_NS = 0x56534958  # "VSIX": advisory lock namespace of the stores' index writes
_BUILD_NS = 0x56534948  # "VSIH": session advisory lock held by the one process building a store's HNSW


def fieldnorm(length: int) -> int:
    """A field length as tantivy scores it: stored in one byte with Lucene's scheme (exact below
    24, then 4 significant bits), so BM25 here gives the embedded index's scores, not just close ones."""
    if length < 24:
        return length
    rest = length - 24
    shift = max(rest.bit_length() - 4, 0)
    return 24 + ((rest >> shift) << shift)


def _np(value: Any) -> np.ndarray:
    """A vector read back (pgvector's ``Vector``, or an array) as float32."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else value, dtype=np.float32)


def _done() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


class PgIndexBackend:
    """The connection pool shared by every store's index of one process."""

    def __init__(self, url: str, embedder_identity: str, dim: int, max_connections: int = 8) -> None:
        self.url = url
        self.embedder_identity = embedder_identity
        self.dim = dim
        self._max = max_connections
        self._pool: ConnectionPool[Any] | None = None
        self._lock = threading.Lock()
        self.body, self.exact = analyzers()
        self.hnsw_quiet_seconds = HNSW_QUIET_SECONDS
        self.hnsw_max_delay_seconds = HNSW_MAX_DELAY_SECONDS
        # store key -> (timer, monotonic time the store was first seen pending): this process's
        # scheduled HNSW builds. Only a schedule: the store's row says whether the index exists.
        self._builds: dict[int, tuple[threading.Timer, float]] = {}
        self._closed = False

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        # Candidates an HNSW scan keeps: at least the 60 vector hits a search asks for, with margin.
        conn.execute("SET hnsw.ef_search = 200")
        # A search is a few small queries; parallelism comes from concurrent requests. Parallel
        # workers (startup per query) and JIT compilation (triggered by cost estimates, tens of
        # ms) only add latency here: an exact 10k-vector scan took 9.5 ms with a worker, 5.8 without.
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute("SET jit = off")

    @property
    def pool(self) -> ConnectionPool[Any]:
        # Opened on first use: the metadata store's migrations (which create the extension and
        # the tables) have run by then.
        with self._lock:
            if self._pool is None:
                pool: ConnectionPool[Any] = ConnectionPool(
                    self.url, min_size=1, max_size=self._max, open=False, configure=self._configure,
                    kwargs={"autocommit": True})
                pool.open(wait=True, timeout=30)
                self._pool = pool
            return self._pool

    @contextmanager
    def store_tx(self, key: int) -> Iterator[psycopg.Connection[Any]]:
        """A transaction holding the store's write lock."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NS, key))
            yield conn

    def open(self, store_id: str) -> PgStoreIndex:
        """The store's index, its rows and vector table created on first use."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO vs_index_stores (store_id, embedder, dim) VALUES (%s, %s, %s)"
                " ON CONFLICT (store_id) DO NOTHING", (store_id, self.embedder_identity, self.dim))
            row = conn.execute("SELECT key, embedder, dim FROM vs_index_stores WHERE store_id = %s",
                               (store_id,)).fetchone()
            assert row is not None  # inserted above or by another process, in a committed transaction
            key, identity, dim = int(row[0]), str(row[1]), int(row[2])
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NS, key))
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (chunk_id BIGINT PRIMARY KEY, vec vector({}) NOT NULL)")
                         .format(_vec_table(key), sql.Literal(dim)))
        return PgStoreIndex(self, store_id, key, identity == self.embedder_identity, dim)

    def drop(self, store_id: str) -> None:
        """Remove a store's index entirely (no-op when it has none)."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute("SELECT key FROM vs_index_stores WHERE store_id = %s", (store_id,)).fetchone()
            if row is None:
                return
            key = int(row[0])
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NS, key))
            for table in ("vs_index_postings", "vs_index_terms", "vs_index_chunks"):
                conn.execute(sql.SQL("DELETE FROM {} WHERE store_key = %s").format(sql.Identifier(table)), (key,))
            conn.execute("DELETE FROM vs_index_stores WHERE key = %s", (key,))  # files cascade
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_vec_table(key)))

    def schedule_hnsw(self, index: PgStoreIndex, after_write: bool) -> None:
        """Build the store's HNSW index in the background once its writes pause. A write
        postpones a scheduled build (up to the maximum delay); a search that finds the store
        pending schedules one only if none is (the process that wrote may have died)."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return
            current = self._builds.get(index.key)
            if current is not None and not after_write:
                return
            since = current[1] if current is not None else now
            if current is not None:
                current[0].cancel()
            due = min(self.hnsw_quiet_seconds, max(since + self.hnsw_max_delay_seconds - now, 0.0))
            timer = threading.Timer(due, self._run_build, (index,))
            timer.daemon = True
            self._builds[index.key] = (timer, since)
            timer.start()

    def _run_build(self, index: PgStoreIndex) -> None:
        try:
            index.ensure_hnsw()
        except Exception:  # the next write or search schedules it again; searches stay exact meanwhile
            log.exception("building the HNSW index of vector store %s failed", index.store_id)
        finally:
            with self._lock:
                current = self._builds.get(index.key)
                if current is not None and current[0] is threading.current_thread():
                    del self._builds[index.key]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            builds, self._builds = self._builds, {}
        for timer, _ in builds.values():
            timer.cancel()
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def _vec_table(key: int) -> sql.Identifier:
    return sql.Identifier(f"vs_index_vec_{int(key)}")


class PgStoreIndex:
    def __init__(self, backend: PgIndexBackend, store_id: str, key: int, semantic_ok: bool, dim: int) -> None:
        self._b = backend
        self.store_id = store_id
        self.key = key
        self.semantic_ok = semantic_ok
        self.dim = dim
        self._vec = _vec_table(key)
        self._cache_lock = threading.Lock()
        self._names: tuple[int, dict[str, tuple[str, dict[str, Any]]]] | None = None
        self._filter_cache: dict[str, tuple[int, list[str]]] = {}

    # -- analysis --------------------------------------------------------------------------
    def _analyse(self, text: str) -> tuple[Counter[str], Counter[str]]:
        return Counter(self._b.body.analyze(text)), Counter(self._b.exact.analyze(text))

    def terms(self, query: str) -> list[tuple[str, str]]:
        return query_terms(self._b.body, self._b.exact, query)

    def word_terms(self, word: str) -> list[str]:
        return list(self._b.body.analyze(word))

    # -- ingestion -------------------------------------------------------------------------
    def add_chunks(
        self, file_id: str, filename: str, attributes: dict[str, Any], chunks: list[Chunk]
    ) -> tuple[list[int], Future[None]]:
        """Replace the file's chunks in one transaction; searchable when this returns."""
        analysed = [self._analyse(c.text) for c in chunks]
        with self._b.store_tx(self.key) as conn:
            self._delete(conn, file_id)
            stats = conn.execute("SELECT n_chunks, body_tokens, exact_tokens FROM vs_index_stores WHERE key = %s",
                                 (self.key,)).fetchone()
            assert stats is not None
            body_total = sum(sum(b.values()) for b, _ in analysed)
            exact_total = sum(sum(e.values()) for _, e in analysed)
            n_before = int(stats[0])
            # The impact ordering uses the store's averages as they are (this file's own in an empty store).
            n_all = max(n_before + len(chunks), 1)
            avg = ((int(stats[1]) + body_total) / n_all or 1.0, (int(stats[2]) + exact_total) / n_all or 1.0)
            ids = [int(r[0]) for r in conn.execute(
                "SELECT nextval('vs_index_chunks_id_seq') FROM generate_series(1, %s)", (len(chunks),))]
            ids.sort()
            conn.execute(
                "INSERT INTO vs_index_files (store_key, file_id, filename, attributes, chunks, tokens)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (self.key, file_id, filename, json.dumps(attributes), len(chunks), sum(c.n_tokens for c in chunks)))
            df: Counter[tuple[int, str]] = Counter()
            with conn.cursor() as cur:
                with cur.copy("COPY vs_index_chunks (id, store_key, file_id, seq, char_start, char_end, tokens, text,"
                              " body_len, exact_len) FROM STDIN") as copy:
                    for chunk_id, chunk, (body, exact) in zip(ids, chunks, analysed, strict=True):
                        copy.write_row((chunk_id, self.key, file_id, chunk.index, chunk.char_start, chunk.char_end,
                                        chunk.n_tokens, chunk.text, sum(body.values()), sum(exact.values())))
                with cur.copy("COPY vs_index_postings (chunk_id, field, term, store_key, tf, dl, impact)"
                              " FROM STDIN") as copy:
                    for chunk_id, fields in zip(ids, analysed, strict=True):
                        for field, counts in enumerate(fields):
                            dl = fieldnorm(sum(counts.values()))
                            norm = K1 * (1 - B + B * dl / avg[field])
                            for term, tf in counts.items():
                                copy.write_row((chunk_id, field, term, self.key, tf, dl, tf * (K1 + 1) / (tf + norm)))
                                df[(field, term)] += 1
            self._add_df(conn, df, 1)
            conn.execute(
                "UPDATE vs_index_stores SET n_chunks = n_chunks + %s, body_tokens = body_tokens + %s,"
                " exact_tokens = exact_tokens + %s, files_version = files_version + 1 WHERE key = %s",
                (len(chunks), body_total, exact_total, self.key))
        return ids, _done()

    def _add_df(self, conn: psycopg.Connection[Any], df: Counter[tuple[int, str]], sign: int) -> None:
        if not df:
            return
        keys = sorted(df)
        conn.execute(
            "INSERT INTO vs_index_terms (store_key, field, term, df)"
            " SELECT %s, f, t, n FROM unnest(%s::int2[], %s::text[], %s::int[]) AS u(f, t, n)"
            " ON CONFLICT (store_key, field, term) DO UPDATE SET df = vs_index_terms.df + EXCLUDED.df",
            (self.key, [f for f, _ in keys], [t for _, t in keys], [sign * df[k] for k in keys]))

    def _delete(self, conn: psycopg.Connection[Any], file_id: str) -> bool:
        """Remove a file inside the caller's locked transaction; whether it was there."""
        found = conn.execute("DELETE FROM vs_index_files WHERE store_key = %s AND file_id = %s RETURNING 1",
                             (self.key, file_id)).fetchone()
        gone = conn.execute(
            "DELETE FROM vs_index_chunks WHERE store_key = %s AND file_id = %s RETURNING id, body_len, exact_len",
            (self.key, file_id)).fetchall()
        if found is None and not gone:
            return False
        ids = [int(r[0]) for r in gone]
        if ids:
            removed = conn.execute("DELETE FROM vs_index_postings WHERE chunk_id = ANY(%s) RETURNING field, term",
                                   (ids,)).fetchall()
            self._add_df(conn, Counter((int(f), str(t)) for f, t in removed), -1)
            vectors = conn.execute(sql.SQL("DELETE FROM {} WHERE chunk_id = ANY(%s)").format(self._vec), (ids,)).rowcount
        else:
            vectors = 0
        conn.execute(
            "UPDATE vs_index_stores SET n_chunks = n_chunks - %s, body_tokens = body_tokens - %s,"
            " exact_tokens = exact_tokens - %s, n_vectors = n_vectors - %s, files_version = files_version + 1"
            " WHERE key = %s",
            (len(ids), sum(int(r[1]) for r in gone), sum(int(r[2]) for r in gone), vectors, self.key))
        return True

    def add_vectors(self, file_id: str, chunk_ids: list[int], vectors: np.ndarray, usage_bytes: int) -> None:
        windows = windows_of(vectors)
        plain = np.asarray(vectors, dtype=np.float32)
        wblobs = [None if w is None or len(w) < 2 else np.asarray(w, dtype=np.float16).tobytes()
                  for w in (windows or [None] * len(chunk_ids))]
        pending = False
        with self._b.store_tx(self.key) as conn:
            present = {int(r[0]) for r in conn.execute(
                "SELECT id FROM vs_index_chunks WHERE id = ANY(%s) AND store_key = %s", (chunk_ids, self.key))}
            rows = [(cid, plain[i]) for i, cid in enumerate(chunk_ids) if cid in present]
            if rows:
                before = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE chunk_id = ANY(%s)").format(self._vec),
                                      ([cid for cid, _ in rows],)).fetchone()
                with conn.cursor() as cur:
                    cur.executemany(sql.SQL("INSERT INTO {} (chunk_id, vec) VALUES (%s, %s) ON CONFLICT (chunk_id)"
                                            " DO UPDATE SET vec = EXCLUDED.vec").format(self._vec), rows)
                    windowed = [(w, cid) for cid, w in zip(chunk_ids, wblobs, strict=True)
                                if cid in present and w is not None]
                    if windowed:
                        cur.executemany("UPDATE vs_index_chunks SET wvec = %s WHERE id = %s", windowed)
                added = len(rows) - int(before[0] if before else 0)
                conn.execute("UPDATE vs_index_files SET embedded = true, usage_bytes = %s"
                             " WHERE store_key = %s AND file_id = %s", (usage_bytes, self.key, file_id))
                state = conn.execute("UPDATE vs_index_stores SET n_vectors = n_vectors + %s WHERE key = %s"
                                     " RETURNING n_vectors, hnsw", (added, self.key)).fetchone()
                pending = state is not None and not state[1] and int(state[0]) >= HNSW_MIN_VECTORS
        if pending:  # committed: the build (another transaction) sees these vectors
            self._b.schedule_hnsw(self, after_write=True)

    def ensure_hnsw(self) -> bool:
        """Build the HNSW index now if the store is large enough and has none; whether it has one.

        ``CREATE INDEX CONCURRENTLY``: writers go on inserting during the build and readers keep
        scanning exactly until the index is valid, when the planner starts using it. One process
        builds (a session advisory lock; a killed build releases it with its connection), and a
        build killed midway leaves an invalid index, which the next one drops first. Later inserts
        maintain the index."""
        name = f"vs_index_vec_{self.key}_hnsw"
        with self._b.pool.connection() as conn:
            got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_BUILD_NS, self.key)).fetchone()
            if not got or not got[0]:
                return False  # another process or thread is building it
            try:
                row = conn.execute("SELECT n_vectors, hnsw FROM vs_index_stores WHERE key = %s",
                                   (self.key,)).fetchone()
                if row is None or row[1] or int(row[0]) < HNSW_MIN_VECTORS:
                    return bool(row and row[1])
                valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                                     (name,)).fetchone()
                if valid is not None and not valid[0]:
                    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(_HNSW_BUILD_MEMORY)))
                conn.execute(sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING hnsw (vec vector_ip_ops)")
                             .format(sql.Identifier(name), self._vec))
                conn.execute("UPDATE vs_index_stores SET hnsw = true WHERE key = %s", (self.key,))
                return True
            finally:
                conn.execute("RESET maintenance_work_mem")
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_BUILD_NS, self.key))

    def delete_file(self, file_id: str) -> bool:
        with self._b.store_tx(self.key) as conn:
            return self._delete(conn, file_id)

    def set_attributes(self, file_id: str, attributes: dict[str, Any]) -> None:
        with self._b.store_tx(self.key) as conn:
            conn.execute("UPDATE vs_index_files SET attributes = %s WHERE store_key = %s AND file_id = %s",
                         (json.dumps(attributes), self.key, file_id))
            conn.execute("UPDATE vs_index_stores SET files_version = files_version + 1 WHERE key = %s", (self.key,))

    # -- reads -----------------------------------------------------------------------------
    def _version(self, conn: psycopg.Connection[Any]) -> int:
        # Every search reads this; it also tells whether the store waits for its HNSW index (its
        # writer may have died before building it), at no extra round trip.
        row = conn.execute("SELECT files_version, NOT hnsw AND n_vectors >= %s FROM vs_index_stores WHERE key = %s",
                           (HNSW_MIN_VECTORS, self.key)).fetchone()
        if row is not None and row[1]:
            self._b.schedule_hnsw(self, after_write=False)
        return -1 if row is None else int(row[0])

    def file_names(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Cached per process until any process changes a file of the store (checked each call)."""
        with self._b.pool.connection() as conn:
            version = self._version(conn)
            with self._cache_lock:
                if self._names is not None and self._names[0] == version:
                    return self._names[1]
            rows = conn.execute("SELECT file_id, filename, attributes FROM vs_index_files WHERE store_key = %s",
                                (self.key,)).fetchall()
        names = {str(r[0]): (str(r[1]), dict(r[2])) for r in rows}
        with self._cache_lock:
            self._names = (version, names)
            self._filter_cache.clear()
        return names

    def allowed_files(self, filt: dict[str, Any] | None) -> list[str] | None:
        if filt is None:
            return None
        names = self.file_names()
        key = json.dumps(filt, sort_keys=True)
        with self._cache_lock:
            version = self._names[0] if self._names is not None else -1
            cached = self._filter_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        allowed = [fid for fid, (_, attrs) in names.items() if filter_mod.matches(filt, attrs)]
        with self._cache_lock:
            if len(self._filter_cache) > 64:
                self._filter_cache.clear()
            self._filter_cache[key] = (version, allowed)
        return allowed

    def num_chunks(self) -> int:
        with self._b.pool.connection() as conn:
            row = conn.execute("SELECT n_chunks FROM vs_index_stores WHERE key = %s", (self.key,)).fetchone()
        return 0 if row is None else int(row[0])

    def _allowed_sql(self, allowed_files: list[str] | None, column: str) -> tuple[sql.Composable, list[Any]]:
        if allowed_files is None:
            return sql.SQL(""), []
        return (sql.SQL(" AND {} IN (SELECT id FROM vs_index_chunks WHERE store_key = %s AND file_id = ANY(%s))")
                .format(sql.SQL(column)), [self.key, list(allowed_files)])

    def keyword_search(self, query: str, k: int, allowed_files: list[str] | None) -> list[tuple[int, float]]:
        terms = self.terms(query)
        if not terms or k <= 0 or (allowed_files is not None and not allowed_files):
            return []
        params: dict[str, Any] = {
            "key": self.key, "fields": [_FIELDS[f] for f, _ in terms], "terms": [t for _, t in terms],
            "full": pgkeyword.TERM_FULL, "depth": max(_TERM_DEPTH_MIN, 4 * k), "k": k, "k1": K1, "b": B,
            "files": list(allowed_files or [])}
        with self._b.pool.connection() as conn:
            rows = conn.execute(pgkeyword.statement(allowed_files is not None), params).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def rare_terms(self, query: str, limit: int, allowed_files: list[str] | None,
                   only: set[tuple[str, str]] | None = None) -> RareTerms:
        out = RareTerms()
        if limit <= 0 or (allowed_files is not None and not allowed_files):
            return out
        wanted = [t for t in self.terms(query) if only is None or t in only]
        if not wanted:
            return out
        with self._b.pool.connection() as conn:
            rows = conn.execute(
                "SELECT t.field, t.term FROM unnest(%s::int2[], %s::text[]) WITH ORDINALITY AS u(field, term, pos)"
                " JOIN vs_index_terms t ON t.store_key = %s AND t.field = u.field AND t.term = u.term"
                " WHERE t.df > 0 AND t.df <= %s ORDER BY u.pos",
                ([_FIELDS[f] for f, _ in wanted], [t for _, t in wanted], self.key, limit)).fetchall()
            out.terms = [(_FIELD_NAMES[int(f)], str(t)) for f, t in rows]
            if not rows:
                return out
            restrict, extra = self._allowed_sql(allowed_files, "p.chunk_id")
            holders = conn.execute(sql.SQL(
                "SELECT p.chunk_id, count(*) FROM unnest(%s::int2[], %s::text[]) AS u(field, term)"
                " JOIN vs_index_postings p ON p.store_key = %s AND p.field = u.field AND p.term = u.term{}"
                " GROUP BY p.chunk_id").format(restrict),
                [[int(f) for f, _ in rows], [str(t) for _, t in rows], self.key, *extra]).fetchall()
        out.holders = {int(cid): int(n) for cid, n in holders}
        return out

    def vector_search(
        self, query_vecs: np.ndarray, k: int, allowed_files: list[str] | None
    ) -> list[list[tuple[int, float]]]:
        empty: list[list[tuple[int, float]]] = [[] for _ in range(len(query_vecs))]
        if (not self.semantic_ok or query_vecs.shape[1] != self.dim or k <= 0
                or (allowed_files is not None and not allowed_files)):
            return empty
        restrict, extra = self._allowed_sql(allowed_files, "chunk_id")
        # "+ 0" keeps a filtered search off the HNSW index: it is exact over the allowed chunks.
        order = sql.SQL("(vec <#> %s) + 0") if allowed_files is not None else sql.SQL("vec <#> %s")
        statement = sql.SQL("SELECT chunk_id, -(vec <#> %s) FROM {} WHERE true{} ORDER BY {} LIMIT %s").format(
            self._vec, restrict, order)
        out = []
        with self._b.pool.connection() as conn:
            for vec in np.asarray(query_vecs, dtype=np.float32):
                rows = conn.execute(statement, [vec, *extra, vec, k]).fetchall()
                out.append([(int(r[0]), float(r[1])) for r in rows])
        return out

    def window_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        if not self.semantic_ok or not ids:
            return {}
        with self._b.pool.connection() as conn:
            # Binary results: vectors arrive as float32 bytes, not text to parse (most of the cost).
            rows = conn.cursor(binary=True).execute(
                sql.SQL("SELECT c.id, c.wvec, v.vec FROM {} v JOIN vs_index_chunks c ON c.id = v.chunk_id"
                        " WHERE v.chunk_id = ANY(%s)").format(self._vec), (list(ids),)).fetchall()
        out = {}
        for cid, wvec, vec in rows:
            if wvec is not None:
                out[int(cid)] = np.frombuffer(wvec, dtype=np.float16).reshape(-1, self.dim).astype(np.float32)
            else:
                out[int(cid)] = _np(vec).reshape(1, -1)
        return out

    def chunk_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        if not self.semantic_ok or not ids:
            return {}
        with self._b.pool.connection() as conn:
            rows = conn.cursor(binary=True).execute(
                sql.SQL("SELECT chunk_id, vec FROM {} WHERE chunk_id = ANY(%s)").format(self._vec),
                (list(ids),)).fetchall()
        return {int(cid): _np(vec) for cid, vec in rows}

    def chunk_rows(self, ids: list[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        with self._b.pool.connection() as conn:
            rows = conn.execute("SELECT id, file_id, seq, text FROM vs_index_chunks WHERE id = ANY(%s)"
                                " AND store_key = %s", (list(ids), self.key)).fetchall()
        return {int(r[0]): ChunkRow(int(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows}

    def file_info(self, file_id: str) -> dict[str, Any] | None:
        with self._b.pool.connection() as conn:
            row = conn.execute("SELECT filename, chunks, tokens, usage_bytes, embedded FROM vs_index_files"
                               " WHERE store_key = %s AND file_id = %s", (self.key, file_id)).fetchone()
        if row is None:
            return None
        return {"filename": row[0], "chunks": int(row[1]), "tokens": int(row[2]), "usage_bytes": int(row[3]),
                "embedded": int(bool(row[4]))}

    def file_content(self, file_id: str) -> str:
        with self._b.pool.connection() as conn:
            rows = conn.execute("SELECT char_start, char_end, text FROM vs_index_chunks WHERE store_key = %s"
                                " AND file_id = %s ORDER BY seq", (self.key, file_id)).fetchall()
        return join_chunks([(int(a), int(b), str(t)) for a, b, t in rows])

    def is_hnsw(self) -> bool:
        with self._b.pool.connection() as conn:
            row = conn.execute("SELECT hnsw FROM vs_index_stores WHERE key = %s", (self.key,)).fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        """Nothing to release per store: the pool belongs to the backend."""
