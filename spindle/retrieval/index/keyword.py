"""BM25 keyword index of one store (tantivy), incremental and on disk.

Each chunk is one tantivy document: its chunk id (a fast field, read back without touching
the document store), its file id (to delete a file's chunks by term) and its text, analysed
with tantivy's English stemmer. Queries are analysed with the same analyser and built as a
disjunction of term queries, so no user text ever reaches tantivy's query parser (whose
syntax would turn ``C++`` or ``"AND"`` into errors).
"""

from __future__ import annotations

import threading
from pathlib import Path

import tantivy

_ANALYZER = "en_stem"
_WRITER_HEAP = 64 * 1024 * 1024
_MAX_QUERY_TERMS = 64


class KeywordIndex:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("chunk_id", stored=False, indexed=False, fast=True)
        builder.add_text_field("file", stored=False, tokenizer_name="raw", index_option="basic")
        builder.add_text_field("body", stored=False, tokenizer_name=_ANALYZER, index_option="freq")
        self._schema = builder.build()
        self._index = tantivy.Index(self._schema, path=str(path), reuse=True)
        self._analyzer = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stemmer("english"))
            .build()
        )
        # Group commit: a commit costs 40-150 ms (fsync), so changes are queued in memory and
        # whoever commits next applies every queued change in one commit. Adding never waits
        # for a commit in progress, so the queue fills while one runs and batching happens.
        self._pending_lock = threading.Lock()
        self._pending: list[tuple[str, str, list[int], list[str]]] = []
        self._ticket = 0
        self._commit_lock = threading.Lock()
        self._committed = 0
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
        with self._commit_lock:
            if self._committed >= target:
                return
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
                    writer.add_document(tantivy.Document(chunk_id=chunk_id, file=file_id, body=text))
            writer.commit()
            self._index.reload()
            self._searcher = self._index.searcher()
            self._committed = upto

    def close(self) -> None:
        self.commit()
        with self._commit_lock:
            self._closed = True
            if self._writer is not None:
                self._writer.wait_merging_threads()
                self._writer = None

    def terms(self, query: str) -> list[str]:
        seen: dict[str, None] = {}
        for term in self._analyzer.analyze(query):
            seen.setdefault(term, None)
        return list(seen)[:_MAX_QUERY_TERMS]

    def search(self, query: str, limit: int, file_ids: list[str] | None = None) -> list[tuple[int, float]]:
        """``(chunk_id, bm25)`` best first; ``file_ids`` restricts to those files."""
        terms = self.terms(query)
        if not terms or limit <= 0 or (file_ids is not None and not file_ids):
            return []
        text_query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "body", term)) for term in terms]
        )
        if file_ids is not None:
            only = tantivy.Query.const_score_query(
                tantivy.Query.term_set_query(self._schema, "file", list(file_ids)), 0.0
            )
            text_query = tantivy.Query.boolean_query([(tantivy.Occur.Must, text_query), (tantivy.Occur.Must, only)])
        searcher = self._searcher
        hits = searcher.search(text_query, limit, count=False).hits
        if not hits:
            return []
        ids = searcher.fast_field_values("chunk_id", [address for _, address in hits])
        # None only for a segment written without the field, which this schema never has
        return [(int(chunk_id), float(score)) for (score, _), chunk_id in zip(hits, ids, strict=True)
                if chunk_id is not None]

    def num_docs(self) -> int:
        return int(self._searcher.num_docs)
