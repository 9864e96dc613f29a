-- The vector stores' search index (spindle/retrieval/index/pgindex.py), so that any process
-- can search any store. Needs the pgvector extension (tests/pgserver.py runs a build with it).
CREATE EXTENSION IF NOT EXISTS vector;

-- One row per vector store's index: a small integer key (postings carry it, not the id text),
-- the embedder that wrote its vectors, the BM25 statistics (chunk count, token totals per
-- field), and a version bumped on every file change (caches of file names check it).
CREATE TABLE vs_index_stores (
    key           SERIAL PRIMARY KEY,
    store_id      TEXT    NOT NULL UNIQUE,
    embedder      TEXT    NOT NULL,
    dim           INTEGER NOT NULL,
    n_chunks      BIGINT  NOT NULL DEFAULT 0,
    body_tokens   BIGINT  NOT NULL DEFAULT 0,
    exact_tokens  BIGINT  NOT NULL DEFAULT 0,
    n_vectors     BIGINT  NOT NULL DEFAULT 0,
    hnsw          BOOLEAN NOT NULL DEFAULT false,
    files_version BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE vs_index_files (
    store_key   INTEGER NOT NULL REFERENCES vs_index_stores (key) ON DELETE CASCADE,
    file_id     TEXT    NOT NULL,
    filename    TEXT    NOT NULL,
    attributes  JSONB   NOT NULL DEFAULT '{}',
    chunks      INTEGER NOT NULL DEFAULT 0,
    tokens      BIGINT  NOT NULL DEFAULT 0,
    usage_bytes BIGINT  NOT NULL DEFAULT 0,
    embedded    BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (store_key, file_id)
);

-- Chunk ids are never reused (a stale id can only miss). wvec: the window vectors of a chunk
-- embedded in several model windows (float16 bytes), read for a search's few candidates.
CREATE TABLE vs_index_chunks (
    id         BIGSERIAL PRIMARY KEY,
    store_key  INTEGER NOT NULL,
    file_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end   INTEGER NOT NULL,
    tokens     INTEGER NOT NULL,
    text       TEXT    NOT NULL,
    body_len   INTEGER NOT NULL,
    exact_len  INTEGER NOT NULL,
    wvec       BYTEA
);
CREATE INDEX vs_index_chunks_file ON vs_index_chunks (store_key, file_id, seq);

-- BM25 postings: field 0 = words (stemmed), 1 = compound tokens, analysed exactly as the
-- embedded (tantivy) index does. dl = the chunk's token count in that field. impact = the
-- term's BM25 factor for this chunk with the store's statistics when it was written: it only
-- orders a term's postings (candidates are read best first); scores are computed exactly.
CREATE TABLE vs_index_postings (
    chunk_id  BIGINT   NOT NULL,
    field     SMALLINT NOT NULL,
    term      TEXT     NOT NULL,
    store_key INTEGER  NOT NULL,
    tf        INTEGER  NOT NULL,
    dl        INTEGER  NOT NULL,
    impact    REAL     NOT NULL,
    PRIMARY KEY (chunk_id, field, term)
);
CREATE INDEX vs_index_postings_term ON vs_index_postings (store_key, field, term, impact DESC);

-- Document frequency per term, kept in the same transactions as the postings.
CREATE TABLE vs_index_terms (
    store_key INTEGER  NOT NULL,
    field     SMALLINT NOT NULL,
    term      TEXT     NOT NULL,
    df        INTEGER  NOT NULL,
    PRIMARY KEY (store_key, field, term)
);
-- Vectors live in one table per store (vs_index_vec_<key>, vector(dim)), created with the
-- store's index, so each store can have its own HNSW index once it is large.
