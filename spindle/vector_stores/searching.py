"""Searching stores: the ``/search`` endpoint, the file_search tool's searches, query rewriting.

Searches run on the registry's I/O pool (never on the event loop, never queued behind an
ingestion). Query rewriting asks the configured chat model for search-ready queries, and
keeps the originals too, so a bad rewrite can only add candidates, never lose them; without
a model the queries are used as given.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from spindle.api.common import validate
from spindle.errors import InvalidRequestError
from spindle.llm.client import UpstreamError
from spindle.retrieval.search import SearchHit, SearchOptions, search
from spindle.vector_stores.indexes import StoreDropped
from spindle.vector_stores.objects import is_expired
from spindle.vector_stores.requests import SearchRequest, search_filters

if TYPE_CHECKING:
    from spindle.vector_stores.service import VectorStoreService

log = logging.getLogger(__name__)

_MAX_QUERIES = 8
_REWRITE_PROMPT = (
    "You turn questions into search queries for a hybrid keyword + semantic search over the user's files. "
    "Rewrite the input into at most {n} short, self-contained queries: resolve pronouns, keep names, numbers "
    "and rare terms verbatim, and split a question that asks several things into one query per thing. "
    'Answer with a JSON array of strings only, e.g. ["query one", "query two"].'
)
_JSON_ARRAY = re.compile(r"\[.*\]", re.S)


def _parse_queries(text: str) -> list[str]:
    match = _JSON_ARRAY.search(text)
    if not match:
        return []
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    if not isinstance(value, list):
        return []
    return [q.strip() for q in value if isinstance(q, str) and q.strip()][:_MAX_QUERIES]


class StoreSearch:
    def __init__(self, service: VectorStoreService) -> None:
        self.service = service

    async def rewrite(self, queries: list[str], model: str, context: str = "") -> list[str]:
        """Originals plus the model's rewrites (deduplicated); the originals on any failure."""
        runtime = self.service.runtime
        if not model or not getattr(runtime.model, "configured", False):
            return queries
        user = json.dumps({"queries": queries, "conversation": context[-2000:]} if context else {"queries": queries})
        messages = [{"role": "system", "content": _REWRITE_PROMPT.format(n=_MAX_QUERIES)},
                    {"role": "user", "content": user}]
        try:
            text = await runtime.model.complete(model, messages)
        except UpstreamError as exc:
            log.info("query rewrite failed, searching with the original queries: %s", exc)
            return queries
        rewritten = _parse_queries(text)
        return list(dict.fromkeys([*queries, *rewritten]))[: _MAX_QUERIES + len(queries)]

    async def search_stores(self, project: str, store_ids: list[str], queries: list[str],
                            options: SearchOptions, checked: bool = False) -> list[SearchHit]:
        """``checked``: the caller has just read each store (no second read per store)."""
        service = self.service
        stores = []
        for store_id in dict.fromkeys(store_ids):
            if not checked and await service.store.get("vector_store", store_id, project) is None:
                continue  # deleted since it was attached: nothing to search there
            try:
                stores.append((store_id, await service.indexes.get(store_id)))
            except StoreDropped:
                continue
        if not stores:
            return []
        embedder = service.indexes.embedder
        return await service.indexes.run_io(lambda: search(stores, queries, embedder, service.settings, options))

    async def api_search(self, project: str, store_id: str, body: dict[str, Any]) -> dict[str, Any]:
        request = validate(SearchRequest, body)
        queries = [request.query] if isinstance(request.query, str) else list(request.query)
        if not queries or not any(q.strip() for q in queries):
            raise InvalidRequestError("'query' must be a non-empty string or list of strings.", param="query",
                                      code="invalid_value")
        filters = search_filters(request.filters)
        vs = await self.service.get_store(project, store_id)
        if is_expired(vs):
            raise InvalidRequestError(f"Vector store {store_id} has expired.", param="vector_store_id",
                                      code="vector_store_expired")
        await self.service.ledger.touch(project, store_id, read=vs)
        if request.rewrite_query:
            queries = await self.rewrite(queries, self.service.settings.rewrite_model)
        ranking = request.ranking_options
        options = SearchOptions(
            max_num_results=request.max_num_results,
            ranker=ranking.ranker if ranking else "auto",
            score_threshold=ranking.score_threshold if ranking else 0.0,
            filters=filters,
        )
        hits = await self.search_stores(project, [store_id], queries, options, checked=True)
        return {
            "object": "vector_store.search_results.page",
            "search_query": queries,
            "data": [
                {"file_id": h.file_id, "filename": h.filename, "score": round(h.score, 6),
                 "attributes": h.attributes, "content": [{"type": "text", "text": h.text}]}
                for h in hits
            ],
            "has_more": False,
            "next_page": None,
        }
