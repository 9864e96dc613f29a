"""BM25 keyword index of one store (tantivy), incremental and on disk.

Each chunk is one tantivy document: its chunk id (a fast field, read back without touching
the document store), its file id (to delete a file's chunks by term) and its text, indexed
twice:

- ``body``: words (letters/digits runs), lowercased, accents folded, English-stemmed.
  ``INV-2026-0042`` becomes ``inv``, ``2026``, ``0042``.
- ``exact``: only *compound* tokens - runs of letters/digits joined by ``-_.,:/#+@`` - kept
  whole and lowercased: ``inv-2026-0042``, ``7,431,902,115``, ``v2.3.1``, ``a.b@c.com``. An
  identifier or a punctuated number is then one rare term, so a chunk holding another
  ``2026`` or ``115`` does not match it.

Queries are analysed with the same two analysers and built as a disjunction of term queries
over both fields, so no user text ever reaches tantivy's query parser (whose syntax would
turn ``C++`` or ``"AND"`` into errors). ``rare_terms`` tells which query terms occur in few
chunks, and which chunks hold them (the ranking guarantee of ``search.py``).
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import tantivy

#: Bumped whenever the schema or an analyser changes; an index written with another version
#: is rebuilt from the chunk store on open (see ``StoreIndex``).
SCHEMA_VERSION = "2"
_BODY = "spindle_words"
_EXACT = "spindle_compound"
_COMPOUND = r"[\p{L}\p{N}]+(?:[-_.,:/#+@][\p{L}\p{N}]+)+"
_WRITER_HEAP = 64 * 1024 * 1024
# A commit costs ~10 ms of CPU however little it carries (segment files, fsync, the merges
# of the small segments it leaves), so under a stream of small files commits are spaced at
# least this far apart and each carries every file queued meanwhile. "A stream" = the last
# commit carried several changes, or came within the gap of the one before it (files arriving
# one by one, faster than the gap); a file after a quiet spell is committed at once.
COMMIT_GAP_S = 0.3
MAX_QUERY_TERMS = 64


def analyzers() -> tuple[tantivy.TextAnalyzer, tantivy.TextAnalyzer]:
    """The ``body`` (words) and ``exact`` (compound tokens) analysers; the PostgreSQL index
    analyses with the same ones, so both indexes see the same terms."""
    body = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )
    exact = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(_COMPOUND))
        .filter(tantivy.Filter.remove_long(64))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .build()
    )
    return body, exact


def query_terms(body: tantivy.TextAnalyzer, exact: tantivy.TextAnalyzer, query: str) -> list[tuple[str, str]]:
    """``(field, term)`` of a query, in order, deduplicated, at most 64."""
    seen: dict[tuple[str, str], None] = {}
    for term in exact.analyze(query):
        seen.setdefault(("exact", term), None)
    for term in body.analyze(query):
        seen.setdefault(("body", term), None)
    return list(seen)[:MAX_QUERY_TERMS]


@dataclass
class RareTerms:
    """The query's terms that occur in at most ``limit`` chunks (and in at least one)."""

    terms: list[tuple[str, str]] = field(default_factory=list)  # (field, term)
    holders: dict[int, int] = field(default_factory=dict)  # chunk id -> how many of them it holds


class KeywordIndex:
    def __init__(self, path: Path, fresh: bool = False) -> None:
        """``fresh``: discard whatever index is on disk at ``path`` (the caller rebuilds it)."""
        if fresh and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("chunk_id", stored=False, indexed=False, fast=True)
        builder.add_text_field("file", stored=False, tokenizer_name="raw", index_option="basic")
        builder.add_text_field("body", stored=False, tokenizer_name=_BODY, index_option="freq")
        builder.add_text_field("exact", stored=False, tokenizer_name=_EXACT, index_option="freq")
        self._schema = builder.build()
        self._index = tantivy.Index(self._schema, path=str(path), reuse=True)
        self._body, self._exact = analyzers()
        self._index.register_tokenizer(_BODY, self._body)
        self._index.register_tokenizer(_EXACT, self._exact)
        # Group commit: a commit costs 40-150 ms (fsync), so changes are queued in memory and
        # whoever commits next applies every queued change in one commit. Adding never waits
        # for a commit in progress, so the queue fills while one runs and batching happens.
        self._pending_lock = threading.Lock()
        self._pending: list[tuple[str, str, list[int], list[str]]] = []
        self._ticket = 0
        self._commit_lock = threading.Lock()
        self._committed = 0
        self._last_commit = 0.0  # time.monotonic() when the last commit ended
        self._last_carried = 0  # how many queued changes it applied
        self._last_spacing = float("inf")  # seconds between the last two commits' ends
        self.commits = 0  # tantivy commits so far (tests, benchmarks)
        self._closed = False
        self._writer: tantivy.IndexWriter | None = None
        self._searcher = self._index.searcher()

    def _queue(self, op: str, file_id: str, chunk_ids: list[int], texts: list[str]) -> int:
        with self._pending_lock:
            self._pending.append((op, file_id, chunk_ids, texts))
            self._ticket += 1
            return self._ticket

    def add(self, file_id: str, chunk_ids: list[int], texts: list[str]) -> int:
        """Queue a file's chunks; returns a ticket that ``commit`` makes visible."""
        return self._queue("add", file_id, chunk_ids, texts)

    def delete_file(self, file_id: str) -> int:
        return self._queue("delete", file_id, [], [])

    def commit(self, ticket: int | None = None) -> None:
        """Return once the change with ``ticket`` (default: every queued change) is searchable."""
        with self._pending_lock:
            target = self._ticket if ticket is None else ticket
        while True:
            with self._commit_lock:
                if self._committed >= target:
                    return
                wait = self._last_commit + COMMIT_GAP_S - time.monotonic()
                if wait <= 0 or (self._last_carried <= 1 and self._last_spacing >= COMMIT_GAP_S):
                    self._commit_locked()
                    return
            time.sleep(wait)  # outside the lock: changes queued meanwhile ride on the next commit

    def _commit_locked(self) -> None:
        """Apply every queued change in one tantivy commit (the caller holds ``_commit_lock``)."""
        if self._closed:
            raise RuntimeError("the keyword index is closed")
        with self._pending_lock:
            ops, self._pending = self._pending, []
            upto = self._ticket
        if self._writer is None:
            self._writer = self._index.writer(_WRITER_HEAP, 1)
        writer = self._writer
        for op, file_id, chunk_ids, texts in ops:
            if op == "delete":
                writer.delete_documents_by_term("file", file_id)
                continue
            for chunk_id, text in zip(chunk_ids, texts, strict=True):
                writer.add_document(tantivy.Document(chunk_id=chunk_id, file=file_id, body=text, exact=text))
        writer.commit()
        self._index.reload()
        self._searcher = self._index.searcher()
        self._committed = upto
        ended = time.monotonic()
        self._last_spacing, self._last_commit = ended - self._last_commit, ended
        self._last_carried = len(ops)
        self.commits += 1

    def close(self) -> None:
        self.commit()
        with self._commit_lock:
            self._closed = True
            if self._writer is not None:
                self._writer.wait_merging_threads()
                self._writer = None

    def terms(self, query: str) -> list[tuple[str, str]]:
        """``(field, term)`` of the query, in order, deduplicated, at most 64."""
        return query_terms(self._body, self._exact, query)

    def _restrict(self, query: tantivy.Query, file_ids: list[str] | None) -> tantivy.Query:
        if file_ids is None:
            return query
        only = tantivy.Query.const_score_query(tantivy.Query.term_set_query(self._schema, "file", list(file_ids)), 0.0)
        return tantivy.Query.boolean_query([(tantivy.Occur.Must, query), (tantivy.Occur.Must, only)])

    def _chunk_ids(self, searcher: tantivy.Searcher, hits: list[tuple[float, tantivy.DocAddress]]) -> list[int | None]:
        values = searcher.fast_field_values("chunk_id", [address for _, address in hits])
        return [None if value is None else int(value) for value in values]

    def search(self, query: str, limit: int, file_ids: list[str] | None = None) -> list[tuple[int, float]]:
        """``(chunk_id, bm25)`` best first; ``file_ids`` restricts to those files."""
        terms = self.terms(query)
        if not terms or limit <= 0 or (file_ids is not None and not file_ids):
            return []
        text_query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, name, term)) for name, term in terms]
        )
        searcher = self._searcher
        hits = searcher.search(self._restrict(text_query, file_ids), limit, count=False).hits
        if not hits:
            return []
        ids = self._chunk_ids(searcher, hits)
        # None only for a segment written without the field, which this schema never has
        return [(int(chunk_id), float(score)) for (score, _), chunk_id in zip(hits, ids, strict=True)
                if chunk_id is not None]

    def word_terms(self, word: str) -> list[str]:
        """What the word analyser makes of one word (its ``body`` terms)."""
        return list(self._body.analyze(word))

    def rare_terms(self, query: str, limit: int, file_ids: list[str] | None = None,
                   only: set[tuple[str, str]] | None = None) -> RareTerms:
        """The query terms (of ``only``, if given) held by 1..``limit`` chunks, and for every
        chunk holding any of them, how many. Document frequencies are store-wide (deleted
        chunks may still count until their segment merges), which only makes fewer terms rare."""
        out = RareTerms()
        if limit <= 0 or (file_ids is not None and not file_ids):
            return out
        searcher = self._searcher
        for name, term in self.terms(query):
            if only is not None and (name, term) not in only:
                continue
            df = int(searcher.doc_freq(name, term))
            if not 0 < df <= limit:
                continue
            out.terms.append((name, term))
            hits = searcher.search(self._restrict(tantivy.Query.term_query(self._schema, name, term), file_ids),
                                   df, count=False).hits
            for chunk_id in self._chunk_ids(searcher, hits):
                if chunk_id is not None:
                    out.holders[int(chunk_id)] = out.holders.get(int(chunk_id), 0) + 1
        return out

    def num_docs(self) -> int:
        return int(self._searcher.num_docs)
