"""The ``file_search`` built-in tool: hybrid search over the assistant's and the thread's stores.

The model is offered one function, ``file_search({"queries": [...]})``; the queries run in
parallel (each a hybrid search over both stores), optionally rewritten first by the run's
model, and the merged best chunks come back labelled with citation markers. ``annotate``
turns the markers the model copies into its answer into ``file_citation`` annotations.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from spindle.ids import now
from spindle.retrieval.search import SearchHit, SearchOptions
from spindle.tools.base import BuiltinTool, RunContext, ToolCall, ToolCallSink, ToolResult, ToolUnavailable
from spindle.tools.file_search import citations
from spindle.vector_stores.objects import is_expired

if TYPE_CHECKING:
    from spindle.runtime import Runtime
    from spindle.vector_stores.service import VectorStoreService

FUNCTION_NAME = "file_search"
DEFAULT_RESULTS = 20
_MAX_QUERIES = 8
_POLL_S = 0.25

# v1 clients' file_citation.quote: the start of the cited chunk.
_QUOTE_CHARS = 1000
# A forced search made by the server uses at most this much of the user's message.
_FORCED_QUERY_CHARS = 2000
_SPEC = {
    "type": "function",
    "function": {
        "name": FUNCTION_NAME,
        "description": (
            "Search the files the user provided (hybrid keyword + semantic search). Pass several short queries "
            "when the question has several parts or could be phrased in different ways; they run in parallel."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "queries": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "One or more self-contained search queries.",
                }
            },
            "required": ["queries"],
        },
    },
}

_INSTRUCTIONS = (
    "You can search the user's files with the file_search function. Each result starts with a source marker "
    "such as 【0:1†report.pdf】. When your answer uses a result, cite it by copying its marker exactly, right after "
    "the statement it supports. Do not invent markers; answer from the results and say so when they do not "
    "contain the answer."
)


def store_ids(ctx: RunContext) -> tuple[list[str], list[str]]:
    """``(assistant store ids, thread store ids)``; either may be absent."""

    def ids(obj: dict[str, Any]) -> list[str]:
        resources = obj.get("tool_resources") or {}
        return list((resources.get("file_search") or {}).get("vector_store_ids") or [])

    return ids(ctx.assistant), ids(ctx.thread)


def tool_filters(ctx: RunContext) -> dict[str, Any] | None:
    """Attribute filters from the tool entry (a response's ``file_search`` tool has them; the
    Assistants tool has none), already checked by the request schema."""
    entry = next((t for t in ctx.tools if t.get("type") == "file_search"), {})
    return (entry.get("file_search") or {}).get("filters")


def tool_options(ctx: RunContext) -> tuple[int, str, float]:
    """``max_num_results``, ranker and score threshold from the run's file_search tool entry."""
    entry = next((t for t in ctx.tools if t.get("type") == "file_search"), {})
    options = entry.get("file_search") or {}
    ranking = options.get("ranking_options") or {}
    return (int(options.get("max_num_results") or DEFAULT_RESULTS), str(ranking.get("ranker") or "auto"),
            float(ranking.get("score_threshold") or 0.0))


def _queries(arguments: str) -> list[str] | None:
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return None
    if not isinstance(args, dict):
        return None
    raw = args.get("queries", args.get("query"))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return None
    queries = [q.strip() for q in raw if isinstance(q, str) and q.strip()]
    return list(dict.fromkeys(queries))[:_MAX_QUERIES] or None


class FileSearchTool(BuiltinTool):
    type = "file_search"

    def __init__(self, runtime: Runtime, service: VectorStoreService) -> None:
        self.runtime = runtime
        self.service = service

    def functions(self, ctx: RunContext) -> list[dict[str, Any]]:
        return [_SPEC]

    def instructions(self, ctx: RunContext) -> str | None:
        return _INSTRUCTIONS

    def forced_call_arguments(self, ctx: RunContext, function_name: str, last_user_text: str) -> str | None:
        # What the model would most likely have searched for: the user's own words.
        query = " ".join(last_user_text.split())[:_FORCED_QUERY_CHARS]
        return json.dumps({"queries": [query]}) if query else None

    async def prepare(self, ctx: RunContext) -> None:
        assistant_ids, thread_ids = store_ids(ctx)
        store = self.service.store
        for store_id in dict.fromkeys(assistant_ids + thread_ids):
            vs = await store.get("vector_store", store_id, ctx.project)
            if vs is not None and is_expired(vs):
                raise ToolUnavailable(
                    f"Vector store {store_id} has expired. Create a new vector store with the same files and "
                    "attach it to the thread or assistant.")
        # Only the thread's store is waited for (as OpenAI does): its files were just attached.
        deadline = time.monotonic() + self.service.settings.thread_wait_s
        for store_id in thread_ids:
            while time.monotonic() < deadline:
                vs = await store.get("vector_store", store_id, ctx.project)
                if vs is None or vs["file_counts"]["in_progress"] == 0:
                    break
                await asyncio.sleep(_POLL_S)
        for store_id in dict.fromkeys(assistant_ids + thread_ids):
            await self.service.ledger.touch(ctx.project, store_id)

    async def call(self, ctx: RunContext, call: ToolCall, sink: ToolCallSink) -> ToolResult:
        max_results, ranker, threshold = tool_options(ctx)
        step_options = {"ranker": "default_2024_08_21" if ranker == "auto" else ranker, "score_threshold": threshold}
        queries = _queries(call.arguments)
        if queries is None:
            return ToolResult(
                output='Error: call file_search with {"queries": ["..."]}, a list of one or more search strings.',
                step_tool_call={"type": "file_search", "file_search": {"ranking_options": step_options, "results": []}})
        assistant_ids, thread_ids = store_ids(ctx)
        settings = self.service.settings
        if settings.tool_rewrite and getattr(self.runtime.model, "configured", False):
            queries = await self.service.search.rewrite(queries, str(ctx.run.get("model") or ""))
        options = SearchOptions(max_num_results=max_results, ranker=ranker, score_threshold=threshold,
                                filters=tool_filters(ctx))
        per_query = await asyncio.gather(*(
            self.service.search.search_stores(ctx.project, assistant_ids + thread_ids, [q], options) for q in queries))
        hits = _merge(per_query, max_results)
        turn = sum(1 for c in ctx.completed_calls if c.get("type") == "file_search")
        mapping = {f"{turn}:{i}": hit.file_id for i, hit in enumerate(hits)}
        quotes = {f"{turn}:{i}": hit.text[:_QUOTE_CHARS] for i, hit in enumerate(hits)}
        ctx.scratch.setdefault("file_search_citations", {}).update(mapping)
        ctx.scratch.setdefault("file_search_quotes", {}).update(quotes)
        # Content is always stored: a later steps.list/retrieve may ask for it with include[];
        # the API layer (services.runs.shape_step) drops it from responses that did not ask.
        results = [{"file_id": hit.file_id, "file_name": hit.filename, "score": round(hit.score, 6),
                    "content": [{"type": "text", "text": hit.text}]} for hit in hits]
        return ToolResult(
            output=_render(turn, queries, hits),
            step_tool_call={"type": "file_search", "file_search": {"ranking_options": step_options,
                                                                   "results": results},
                            "_citations": mapping, "_quotes": quotes, "_searched_at": now()},
        )

    def annotate(self, ctx: RunContext, text: str) -> list[dict[str, Any]]:
        mapping = citations.citation_map(ctx.completed_calls)
        mapping.update(ctx.scratch.get("file_search_citations") or {})
        quotes = citations.quote_map(ctx.completed_calls)
        quotes.update(ctx.scratch.get("file_search_quotes") or {})
        return citations.find_citations(text, mapping, quotes)

    def pending_marker(self, text: str) -> int | None:
        return citations.pending(text)


def _merge(per_query: list[list[SearchHit]], limit: int) -> list[SearchHit]:
    """Best chunks over all queries: a chunk found by several queries keeps its best score."""
    best: dict[tuple[str, int], SearchHit] = {}
    for hits in per_query:
        for hit in hits:
            key = (hit.store_id, hit.chunk_id)
            if key not in best or hit.score > best[key].score:
                best[key] = hit
    return sorted(best.values(), key=lambda h: -h.score)[:limit]


def _render(turn: int, queries: list[str], hits: list[SearchHit]) -> str:
    if not hits:
        return f"No results in the files for: {'; '.join(queries)}."
    parts = [f"file_search results for: {'; '.join(queries)}"]
    for i, hit in enumerate(hits):
        parts.append(f"{citations.marker(turn, i, hit.filename)}\n{hit.text.strip()}")
    parts.append("Cite the results you use with their markers, exactly as shown (e.g. "
                 f"{citations.marker(turn, 0, hits[0].filename)}).")
    return "\n\n".join(parts)
