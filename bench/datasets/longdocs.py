"""Long-document sets: the answer is one small part of a long chunk.

- ``needles``: 160 facts, each hidden at a random place inside ~1,800 tokens of unrelated
  msmarco passages (one file per fact, so 3-5 chunks of 800 tokens), plus one short file per
  fact that states the same kind of fact about something else (a near-duplicate without the
  asked-for name). The query asks for the fact by its subject; only the long file is relevant.
- ``<set>-concat``: a shared set's documents concatenated, in a fixed random order, into files
  of at most 760 o200k tokens - one 800-token chunk each - so every judged document is one
  part of a chunk. A file's grade is the best grade of the documents in it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from bench.datasets._words import Names

Set = tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]

_TEMPLATES: list[tuple[str, str]] = [
    ("The secret codename for project {a} is {b}.", "secret codename for project {a}"),
    ("{p} keeps the spare key to the boathouse under the blue flowerpot by the back door.",
     "where does {p} keep the spare key"),
    ("The {a} expedition reached the summit after {n} days of climbing through snow storms.",
     "how many days did the {a} expedition need to reach the summit"),
    ("According to the archive, {p} founded the {a} glassworks in the harbour district in {y}.",
     "who founded the {a} glassworks"),
    ("The famous stew served at the {a} inn is made with smoked paprika, lentils and three cloves of garlic.",
     "what ingredients are in the stew at the {a} inn"),
    ("Engineers at {a} traced the outage to a cooling pump that failed after a firmware update.",
     "what caused the outage at {a}"),
    ("The {a} orchestra rehearses every Thursday evening in the old railway depot.",
     "when and where does the {a} orchestra rehearse"),
    ("{p} was the first person to swim across the {a} strait without a wetsuit.",
     "first person to swim the {a} strait"),
]


def _passages(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line:
            out.append(json.loads(line)["text"].strip())
    return out


def _slots(names: Names, rng: random.Random) -> dict[str, str]:
    return {"a": names.word(), "b": names.word().upper(), "p": names.person(), "n": str(rng.randint(9, 60)),
            "y": str(rng.randint(1820, 1990))}


def needles(data: Path, count_tokens: Callable[[str], int], n_facts: int = 160, filler_tokens: int = 1800) -> Set:
    rng = random.Random(8)
    names = Names(8)
    pool = _passages(data / "msmarco-5k" / "corpus.jsonl")
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i in range(n_facts):
        statement, question = _TEMPLATES[i % len(_TEMPLATES)]

        slots = _slots(names, rng)
        fact, query = statement.format(**slots), question.format(**slots)
        filler: list[str] = []
        tokens = 0
        while tokens < filler_tokens:
            passage = rng.choice(pool)
            filler.append(passage)
            tokens += count_tokens(passage)
        filler.insert(rng.randint(1, len(filler) - 1), fact)
        corpus[f"needle-{i:03d}"] = "\n\n".join(filler)
        corpus[f"short-{i:03d}"] = f"Note {i}.\n\n{statement.format(**_slots(names, rng))}"
        queries[f"n{i:03d}"] = query
        qrels[f"n{i:03d}"] = {f"needle-{i:03d}": 1}
    return corpus, queries, qrels


def concatenated(base: Set, count_tokens: Callable[[str], int], max_tokens: int = 760) -> Set:
    corpus, queries, qrels = base
    order = sorted(corpus)
    random.Random(9).shuffle(order)
    files: dict[str, str] = {}
    file_of: dict[str, str] = {}
    parts: list[str] = []
    members: list[str] = []
    used = 0

    def flush() -> None:
        if parts:
            file_id = f"cat-{len(files):05d}"
            files[file_id] = "\n\n".join(parts)
            for doc_id in members:
                file_of[doc_id] = file_id
            parts.clear()
            members.clear()

    for doc_id in order:
        n = count_tokens(corpus[doc_id]) + 2
        if n > max_tokens:  # a document longer than a chunk stays alone
            flush()
        elif used + n > max_tokens:
            flush()
            used = 0
        parts.append(corpus[doc_id])
        members.append(doc_id)
        used += n
        if n > max_tokens:
            flush()
            used = 0
    flush()
    file_qrels: dict[str, dict[str, int]] = {}
    for qid, rel in qrels.items():
        out: dict[str, int] = {}
        for doc_id, grade in rel.items():
            if doc_id in file_of:
                out[file_of[doc_id]] = max(out.get(file_of[doc_id], 0), grade)
        if any(g > 0 for g in out.values()):
            file_qrels[qid] = out
    return files, {q: t for q, t in queries.items() if q in file_qrels}, file_qrels
