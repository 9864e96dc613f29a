"""What a response reads before its own input: the ``previous_response_id`` chain or the
``conversation``, as items, rebuilt from the store on every model turn (so any process can
execute or resume it).

A conversation holds its items in the store (kind ``conversation_item``, in insertion order);
a response made in a conversation is one entry there, a reference to the response, written
in the same transaction that creates the response. Listing the conversation expands it into
the response's input and output items — read from the response itself, so the conversation
never holds a second copy that a crash could leave half-written.
"""

from __future__ import annotations

import contextlib
from typing import Any

from spindle.engine.objects import TERMINAL_RUN_STATUSES
from spindle.responses import items as item_rules
from spindle.responses.render import replay
from spindle.store.base import Conflict, MetadataStore, Update

# How many earlier responses a previous_response_id chain may reach back; older ones are
# left out of the prompt (as a truncation would drop them anyway).
MAX_CHAIN = 256
# How many entries of a conversation are read for a prompt or a listing.
MAX_CONVERSATION_ENTRIES = 10_000
REF_TYPE = "_response_ref"
# The run's field holding a settled response's output items (see ``response_items``).
OUTPUT_CACHE = "_output"


async def response_items(store: MetadataStore, run: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's input items, then its output items.

    The output is rendered from the event log; once the response is settled it can no longer
    change, so the first reader keeps it on the run's row (``_output``, written only while
    the status is still the one rendered). A chain of N responses then costs each turn N row
    reads instead of N log replays (bench/bench_responses_chain.py)."""
    output = run.get(OUTPUT_CACHE)
    if output is None:
        output = (await replay(store, run)).response["output"]
        if run["status"] in TERMINAL_RUN_STATUSES:
            with contextlib.suppress(Conflict):  # deleted meanwhile: nothing to keep
                await store.write([Update("run", run["id"], fields={OUTPUT_CACHE: output},
                                          expect={"status": run["status"]})])
    return [*list(run.get("_input") or []), *output]


async def expand_conversation(store: MetadataStore, project: str, conversation_id: str,
                              stop_at: str | None = None) -> list[dict[str, Any]]:
    """The conversation's items in order; ``stop_at``: a response id whose entry ends the list."""
    out: list[dict[str, Any]] = []
    entries = await store.scan("conversation_item", parent=conversation_id)
    for entry in entries[:MAX_CONVERSATION_ENTRIES]:
        if entry.get("type") != REF_TYPE:
            out.append(entry)
            continue
        if entry["response_id"] == stop_at:
            break
        run = await store.get("run", entry["response_id"], project)
        if run is None:
            continue  # the response was deleted: its items go with it
        hidden = set(entry.get("_deleted") or [])
        out += [i for i in await response_items(store, run) if i.get("id") not in hidden]
    return out


async def context_items(store: MetadataStore, project: str, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything the model reads for this response, in order (its own input last)."""
    fields = run.get("_response") or {}
    before: list[dict[str, Any]] = []
    if fields.get("conversation"):
        before = await expand_conversation(store, project, fields["conversation"], stop_at=run["id"])
    elif fields.get("previous_response_id"):
        before = await chain_items(store, project, fields["previous_response_id"])
    return [*before, *list(run.get("_input") or [])]


async def chain_items(store: MetadataStore, project: str, response_id: str) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    next_id: str | None = response_id
    while next_id and len(chain) < MAX_CHAIN:
        run = await store.get("run", next_id, project)
        if run is None or run.get("_kind") != "response":
            break  # deleted meanwhile: the chain ends there
        chain.append(run)
        next_id = (run.get("_response") or {}).get("previous_response_id")
    out: list[dict[str, Any]] = []
    for run in reversed(chain):
        out += await response_items(store, run)
    return out


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return item_rules.to_chat(items)
