"""Exact terms win: unique words in long filler documents, bare identifiers, punctuated numbers.

The same stores are searched three ways: the library call, ``POST /vector_stores/{id}/search``
through the SDK, and a run's ``file_search`` call (scripted upstream model). In every case
the file that holds the asked-for term must come first.
"""

from __future__ import annotations

import json
import random
from typing import Any

import openai
import pytest

from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.embedding import Embedder
from spindle.retrieval.index.store import StoreIndex
from spindle.retrieval.pipeline import ingest
from spindle.retrieval.search import SearchOptions, search
from spindle.retrieval.settings import RetrievalSettings
from tests.retrieval.conftest import upload

# Made-up project names and codenames: each occurs in exactly one file.
PROJECTS = [
    ("Halvering", "Quillborne"), ("Mistral", "Obsidrake"), ("Tanager", "Fennowick"), ("Corvid", "Skaldmere"),
    ("Lantern", "Brisquet"), ("Juniper", "Vorthane"), ("Kestrel", "Palimund"), ("Meridian", "Tossaline"),
    ("Orchard", "Gravolet"), ("Pavilion", "Whistmoor"), ("Quarry", "Zendrical"), ("Rampart", "Caddowix"),
    ("Saffron", "Ulvenmark"), ("Trellis", "Morrowgate"), ("Umber", "Hexlarion"), ("Vantage", "Drumlowe"),
    ("Wicket", "Ostravane"), ("Yarrow", "Klemptide"), ("Zephyr", "Arvashel"), ("Bastion", "Nimbrecht"),
]
LONG = {1, 3, 4, 7, 9, 12, 14, 16, 18}  # these 9 hide the sentence inside a page of filler

_SUBJECTS = ["The committee", "Our team", "The regional office", "The new supplier", "Management", "The auditor",
             "Each department", "The warehouse crew", "The customer panel", "The city council"]
_VERBS = ["reviewed", "discussed", "postponed", "approved", "summarised", "questioned", "updated", "published"]
_OBJECTS = ["the quarterly budget", "the holiday schedule", "the parking rules", "the cafeteria menu",
            "the safety checklist", "the travel policy", "the printer contract", "the training plan",
            "the office layout", "the recycling targets"]
_TAILS = ["before the end of the month.", "after a long meeting.", "with minor changes.", "for the second time.",
          "without much debate.", "at the request of the board.", "in the weekly newsletter.", "on Tuesday."]


def filler_page(seed: int, words: int = 600) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    count = 0
    while count < words:
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
        out.append(sentence)
        count += len(sentence.split())
    return " ".join(out)


def sentence(i: int) -> str:
    name, code = PROJECTS[i]
    return f"The secret codename for project {name} is {code}."


def codename_files() -> dict[str, bytes]:
    """20 files, one unique sentence each; 9 of them inside ~1,200 words of ordinary filler."""
    files = {}
    for i in range(len(PROJECTS)):
        if i in LONG:
            page = filler_page(i).split(". ")
            middle = len(page) // 2
            text = ". ".join(page[:middle]) + ". " + sentence(i) + " " + ". ".join(page[middle:])
            text += " " + filler_page(100 + i)
        else:
            text = sentence(i)
        files[f"project-{i:02d}.txt"] = text.encode()
    return files


_TERMS = ("Payment is due within thirty days. All amounts are in US dollars and exclude taxes. "
          "Please quote the invoice number on every remittance.")

INVOICES = {
    "invoice-0042.txt": f"Invoice INV-2026-0042\nBilled to Harlow Brennan Ltd.\nTotal due: 7,431,902,115 USD.\n{_TERMS}",
    "invoice-0043.txt": f"Invoice INV-2026-0043\nBilled to Osric Pellham GmbH.\nTotal due: 7,431,902,116 USD.\n{_TERMS}",
    "invoice-0044.txt": f"Invoice INV-2026-0044\nBilled to Harlow Brennan Ltd.\nTotal due: 1,902,431,115 USD.\n{_TERMS}",
    "invoice-0142.txt": f"Invoice INV-2025-0042\nBilled to Tamsin Roake Inc.\nTotal due: 431,902 USD.\n{_TERMS}",
    "summary-2026.txt": (
        "Invoice summary for 2026. Ticket 0042 was closed in 2026. This year we issued 7 invoices, sent 431 "
        "reminders, posted 902 letters and shipped 115 parcels; invoice totals in USD are listed per invoice. "
        "INV is the prefix of every invoice number. " + _TERMS
    ),
}

CONTENT = "step_details.tool_calls[*].file_search.results[*].content"

# query -> the file that must come first
CODENAME_QUERIES = {f"secret codename for project {name}": f"project-{i:02d}.txt"
                    for i, (name, _) in enumerate(PROJECTS)}
BARE_CODENAMES = {code: f"project-{i:02d}.txt" for i, (_, code) in enumerate(PROJECTS)}
INVOICE_QUERIES = {
    "INV-2026-0042": "invoice-0042.txt",
    "INV-2026-0043": "invoice-0043.txt",
    "7,431,902,115": "invoice-0042.txt",
    "7,431,902,116": "invoice-0043.txt",
    "invoice 7,431,902,115 total": "invoice-0042.txt",
    "1,902,431,115": "invoice-0044.txt",
}


def _library_store(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings,
                   files: dict[str, bytes]) -> None:
    for name, data in files.items():
        ingest(store, embedder, name, name, data, {}, ChunkingStrategy(), settings)


def _first_files(store: StoreIndex, embedder: Embedder, settings: RetrievalSettings,
                 queries: dict[str, str], ranker: str = "auto") -> dict[str, str]:
    out = {}
    for query in queries:
        hits = search([("vs", store)], [query], embedder, settings, SearchOptions(max_num_results=5, ranker=ranker))
        out[query] = hits[0].file_id if hits else ""
    return out


@pytest.mark.parametrize("ranker", ["auto", "none"])
def test_unique_word_in_a_long_filler_document_beats_short_near_duplicates(
        store: StoreIndex, embedder: Embedder, settings: RetrievalSettings, ranker: str) -> None:
    _library_store(store, embedder, settings, codename_files())
    long_chunks = [store.chunks.file_info(f"project-{i:02d}.txt") for i in LONG]
    assert all(info is not None and info["tokens"] > 800 for info in long_chunks)  # really long: several chunks
    wanted = {**CODENAME_QUERIES, **BARE_CODENAMES}
    got = _first_files(store, embedder, settings, wanted, ranker)
    assert got == wanted


def test_identifiers_and_punctuated_numbers_find_their_document(
        store: StoreIndex, embedder: Embedder, settings: RetrievalSettings) -> None:
    _library_store(store, embedder, settings, {name: text.encode() for name, text in INVOICES.items()})
    assert _first_files(store, embedder, settings, INVOICE_QUERIES) == INVOICE_QUERIES


def test_compound_terms_are_one_rare_term_on_both_sides(store: StoreIndex) -> None:
    terms = store.keyword.terms("Pay INV-2026-0042: 7,431,902,115 USD")
    assert ("exact", "inv-2026-0042") in terms and ("exact", "7,431,902,115") in terms
    assert ("body", "2026") in terms and ("body", "pay") in terms
    store.keyword.add("f1", [1], ["Invoice INV-2026-0042 totals 7,431,902,115 USD."])
    store.keyword.add("f2", [2], ["In 2026 we sent 7 invoices, 431 letters, 902 parcels and 115 reminders; 0042."])
    store.keyword.commit()
    # the split parts match both chunks, the whole identifier and number only the first
    rare = store.keyword.rare_terms("INV-2026-0042 7,431,902,115", limit=1)
    assert ("exact", "inv-2026-0042") in rare.terms and ("exact", "7,431,902,115") in rare.terms
    assert set(rare.holders) == {1}
    assert [cid for cid, _ in store.keyword.search("7,431,902,115", 5)][0] == 1


def _store_with(client: openai.OpenAI, files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    ids = {name: upload(client, name, data) for name, data in files.items()}
    vs = client.vector_stores.create(name="kb", file_ids=list(ids.values()))
    for file_id in ids.values():
        assert client.vector_stores.files.poll(file_id, vector_store_id=vs.id).status == "completed"
    return vs.id, ids


def test_search_endpoint_puts_the_exact_match_first(client: openai.OpenAI) -> None:
    files = {**codename_files(), **{name: text.encode() for name, text in INVOICES.items()}}
    vs_id, _ = _store_with(client, files)
    wanted = {**CODENAME_QUERIES, **BARE_CODENAMES, **INVOICE_QUERIES}
    got = {}
    for query in wanted:
        page = client.vector_stores.search(vs_id, query=query, max_num_results=5)
        got[query] = page.data[0].filename if page.data else ""
    assert got == wanted


def test_file_search_call_in_a_run_puts_the_exact_match_first(client: openai.OpenAI, upstream: Any) -> None:
    files = {**codename_files(), **{name: text.encode() for name, text in INVOICES.items()}}
    vs_id, ids = _store_with(client, files)
    cases = [("secret codename for project Kestrel", "project-06.txt"),
             ("secret codename for project Mistral", "project-01.txt"),  # a long filler document
             ("Hexlarion", "project-14.txt"),  # a bare codename, in a long filler document
             ("INV-2026-0042", "invoice-0042.txt"),
             ("7,431,902,116", "invoice-0043.txt")]
    assistant = client.beta.assistants.create(
        model="gpt-4-turbo", instructions="Answer from the files.",
        tools=[{"type": "file_search", "file_search": {"max_num_results": 5}}],
        tool_resources={"file_search": {"vector_store_ids": [vs_id]}})
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": [query]})}]} for query, _ in cases
    ]
    upstream.script("look these up", [*turns, {"content": "Done."}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Please look these up for me."}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, include=[CONTENT])
    assert run.status == "completed", run.last_error
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, include=[CONTENT], order="asc")
    calls = [s.step_details.tool_calls[0] for s in steps.data if s.type == "tool_calls"]
    assert len(calls) == len(cases)
    firsts = [call.file_search.results[0].file_id if call.file_search.results else "" for call in calls]
    assert firsts == [ids[name] for _, name in cases]


def test_which_terms_count_as_exact(store: StoreIndex, settings: RetrievalSettings) -> None:
    from spindle.retrieval.search import exact_like

    def body(query: str) -> set[str]:
        return {term for name, term in exact_like(store, query, settings) if name == "body"}

    assert body("where is project Lantern") == {"lantern"}  # a name: capitalised inside the query
    assert "codenam" in body("secret codename")  # two o200k tokens: counts, but only if it is also rare
    assert body("Hexlarion") == {"hexlarion"}  # not a word of the vocabulary
    assert body("revenue of CFOs in Q3") == {"cfos", "q3"}  # inner capital, digit
    # ordinary words stay with BM25's weighting however rare they are in a store
    assert body("quick wins and immediate actions versus workload") == set()
    assert ("exact", "inv-2026-0042") in exact_like(store, "status of INV-2026-0042", settings)


def test_scores_stay_ordered_when_exact_matches_move_up(store: StoreIndex, embedder: Embedder,
                                                          settings: RetrievalSettings) -> None:
    _library_store(store, embedder, settings, {name: text.encode() for name, text in INVOICES.items()})
    hits = search([("vs", store)], ["invoice 7,431,902,116 total"], embedder, settings,
                  SearchOptions(max_num_results=5))
    assert hits[0].file_id == "invoice-0043.txt"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0 < h.score <= 1 for h in hits)
