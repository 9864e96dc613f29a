-- Keyword search reads postings from the indexes alone (index-only scans, spindle/retrieval/index/pgkeyword.py):
-- a term's postings best first with what its BM25 needs (chunk, tf, dl), and one chunk's posting
-- of a term with its tf and dl. Without the INCLUDE columns every posting read cost a heap
-- probe at a random page (most of a 100k-chunk search's keyword time).
DROP INDEX vs_index_postings_term;
CREATE INDEX vs_index_postings_term ON vs_index_postings (store_key, field, term, impact DESC)
    INCLUDE (chunk_id, tf, dl);
ALTER TABLE vs_index_postings DROP CONSTRAINT vs_index_postings_pkey,
    ADD PRIMARY KEY (chunk_id, field, term) INCLUDE (tf, dl);
