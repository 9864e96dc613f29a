"""BM25 top-k over the PostgreSQL postings in one statement (used by ``pgindex.PgStoreIndex``).

Exact BM25 needs every posting of every query term, and a common term's list is a large part
of the store (a word in 30% of 100k chunks: 30k postings). tantivy answers it with block-max
WAND; here the same idea runs as "max-score" pruning over impact-ordered lists:

1. **Lists.** Each term's postings are read best first by ``impact`` (its BM25 factor with the
   store's statistics when written), from the covering index (index-only): all of them when the
   term is in at most ``full`` chunks, else the best ``depth``. A complete list's contributions
   are exact; a cut list's unread postings contribute at most its *bound*, idf times the lowest
   impact read.
2. **Partial scores.** Each chunk found sums the contributions it was found with: a lower bound
   of its score. ``theta`` = the k-th best lower bound.
3. **Completion.** A chunk missing some cut terms could still reach ``theta`` only if its lower
   bound plus the bounds of the cut terms it was not found with exceeds ``theta``; only those
   chunks look their missing terms up (primary-key probes, index-only). The rest cannot enter
   the top k (up to the impacts' stale statistics, which only order the lists) and are dropped.

At 100k synthetic chunks this found the exact top 60 on 20 of 20 queries (the previous read of
200 postings per term with every candidate probed: 45% of it) and probes a few hundred pairs
instead of thousands (docs/decisions/h-pgindex.md).
"""

from __future__ import annotations

from psycopg import sql

TERM_FULL = 5000  # a term in at most this many chunks is read whole (exact, no probes)

# %(restrict)s: the allowed-files condition on ``p.chunk_id`` (or nothing).
_STATEMENT = """
WITH st AS (SELECT GREATEST(n_chunks, 1)::float8 AS n,
                   GREATEST(body_tokens::float8 / GREATEST(n_chunks, 1), 1e-9) AS avg0,
                   GREATEST(exact_tokens::float8 / GREATEST(n_chunks, 1), 1e-9) AS avg1
            FROM vs_index_stores WHERE key = %(key)s),
q AS (SELECT u.i, t.field, t.term, t.df > %(full)s AS cut, ln(1 + (st.n - t.df + 0.5) / (t.df + 0.5)) AS idf,
             CASE t.field WHEN 0 THEN st.avg0 ELSE st.avg1 END AS avgdl
      FROM unnest(%(fields)s::int2[], %(terms)s::text[]) WITH ORDINALITY AS u(field, term, i)
      JOIN vs_index_terms t ON t.store_key = %(key)s AND t.field = u.field AND t.term = u.term AND t.df > 0
      CROSS JOIN st),
lists AS MATERIALIZED (
      SELECT q.i, c.chunk_id, c.impact,
             q.idf * c.tf * (%(k1)s + 1) / (c.tf + %(k1)s * (1 - %(b)s + %(b)s * c.dl / q.avgdl)) AS s
      FROM q CROSS JOIN LATERAL (
          SELECT p.chunk_id, p.tf, p.dl, p.impact FROM vs_index_postings p
          WHERE p.store_key = %(key)s AND p.field = q.field AND p.term = q.term{restrict}
          ORDER BY p.impact DESC LIMIT CASE WHEN q.cut THEN %(depth)s ELSE %(full)s END) c),
bound AS (SELECT q.i, max(q.idf) * min(l.impact) AS ub FROM q JOIN lists l ON l.i = q.i WHERE q.cut GROUP BY q.i),
part AS MATERIALIZED (
      SELECT l.chunk_id, sum(l.s) AS s, array_agg(l.i) AS have,
             (SELECT coalesce(sum(ub), 0) FROM bound) - coalesce(sum(bd.ub), 0) AS rest
      FROM lists l LEFT JOIN bound bd ON bd.i = l.i GROUP BY l.chunk_id),
theta AS (SELECT coalesce((SELECT s FROM part ORDER BY s DESC OFFSET %(k)s - 1 LIMIT 1), 0) AS v),
extra AS (
      SELECT part.chunk_id,
             q.idf * p.tf * (%(k1)s + 1) / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.dl / q.avgdl)) AS s
      FROM part CROSS JOIN theta JOIN q ON q.cut AND NOT q.i = ANY(part.have)
      JOIN vs_index_postings p ON p.chunk_id = part.chunk_id AND p.field = q.field AND p.term = q.term
      WHERE part.s + part.rest > theta.v)
SELECT chunk_id, sum(s) AS score FROM (SELECT chunk_id, s FROM part UNION ALL SELECT chunk_id, s FROM extra) x
GROUP BY chunk_id ORDER BY score DESC, chunk_id LIMIT %(k)s"""


def statement(restrict: bool) -> sql.Composed:
    """The query; parameters by name: key, fields, terms, full, depth, k, k1, b (and, with
    ``restrict``, files: only chunks of those files count)."""
    cond = " AND p.chunk_id IN (SELECT id FROM vs_index_chunks WHERE store_key = %(key)s AND file_id = ANY(%(files)s))"
    return sql.SQL(_STATEMENT.replace("{restrict}", cond if restrict else "")).format()
