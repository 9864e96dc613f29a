"""Retrieval quality on BEIR-format sets: nDCG@10 and recall@20, keyword vs semantic vs hybrid.

Every corpus document is ingested as one ``.txt`` file (title + text) through the real
pipeline (parse, o200k chunking, MiniLM embedding, tantivy + faiss) into one store, and
each query goes through ``spindle.retrieval.search.search`` - the function the endpoint
and the tool call. Modes: keyword-only and semantic-only (one candidate list), hybrid with
the ``none`` ranker (weighted RRF only) and the shipped default (``auto``: RRF + feedback).

    python bench/bench_quality.py                      # the table, both sets
    python bench/bench_quality.py --sweep dbpedia-5k   # grid over fusion/feedback parameters

Indexes are cached under --work (delete it to re-ingest). nDCG uses linear gains (as
pytrec_eval / BEIR do); a qrel score > 0 is relevant for recall.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spindle.retrieval.chunker import ChunkingStrategy  # noqa: E402
from spindle.retrieval.embedding import get_embedder  # noqa: E402
from spindle.retrieval.index.store import StoreIndex  # noqa: E402
from spindle.retrieval.pipeline import ingest  # noqa: E402
from spindle.retrieval.search import SearchOptions, search  # noqa: E402
from spindle.retrieval.settings import RetrievalSettings  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "retrieval"


def load_set(name: str) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    root = DATA / name
    corpus = {}
    for line in filter(None, (root / "corpus.jsonl").read_text(encoding="utf-8").split("\n")):
        doc = json.loads(line)
        corpus[str(doc["_id"])] = (doc.get("title", "") + "\n\n" + doc["text"]).strip()
    queries = {}
    for line in filter(None, (root / "queries.jsonl").read_text(encoding="utf-8").split("\n")):
        q = json.loads(line)
        queries[str(q["_id"])] = q["text"]
    qrels: dict[str, dict[str, int]] = {}
    for line in filter(None, (root / "qrels" / "test.tsv").read_text(encoding="utf-8").split("\n")):
        qid, did, score = line.split("\t")
        if not score.strip().lstrip("-").isdigit():  # a header row
            continue
        qrels.setdefault(qid, {})[did] = int(score)
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return corpus, queries, qrels


def build_index(name: str, corpus: dict[str, str], settings: RetrievalSettings, work: Path) -> StoreIndex:
    embedder = get_embedder(settings)
    directory = work / name
    done = directory / "complete"
    index = StoreIndex(directory, settings, embedder.identity, embedder.dimensions)
    if done.exists():
        return index
    started = time.perf_counter()

    def one(item: tuple[str, str]) -> None:
        doc_id, text = item
        ingest(index, embedder, doc_id, f"{doc_id}.txt", text.encode("utf-8"), {}, ChunkingStrategy(), settings)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, corpus.items()))
    index.vectors.maybe_snapshot(force=True)
    done.write_text("ok")
    print(f"# ingested {name}: {len(corpus)} docs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return index


def evaluate(
    index: StoreIndex,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    settings: RetrievalSettings,
    options: SearchOptions,
) -> tuple[float, float]:
    embedder = get_embedder(settings)
    ndcgs, recalls = [], []
    for qid, text in queries.items():
        hits = search([("vs", index)], [text], embedder, settings, options)
        ranked: list[str] = []
        for hit in hits:  # one chunk per document here, but stay safe
            if hit.file_id not in ranked:
                ranked.append(hit.file_id)
        rel = qrels[qid]
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        ndcgs.append(dcg / idcg if idcg else 0.0)
        relevant = {d for d, g in rel.items() if g > 0}
        recalls.append(len(relevant & set(ranked[:20])) / len(relevant) if relevant else 0.0)
    return sum(ndcgs) / len(ndcgs), sum(recalls) / len(recalls)


MODES = {
    "keyword only (BM25)": SearchOptions(max_num_results=20, ranker="none", modes=("keyword",)),
    "semantic only (MiniLM)": SearchOptions(max_num_results=20, ranker="none", modes=("semantic",)),
    "hybrid, RRF only (ranker none)": SearchOptions(max_num_results=20, ranker="none"),
    "hybrid, shipped default (auto)": SearchOptions(max_num_results=20, ranker="auto"),
}


def table(sets: list[str], settings: RetrievalSettings, work: Path) -> None:
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name in sets:
        corpus, queries, qrels = load_set(name)
        index = build_index(name, corpus, settings, work)
        results[name] = {mode: evaluate(index, queries, qrels, settings, opts) for mode, opts in MODES.items()}
    header = "| mode | " + " | ".join(f"{n} nDCG@10 | {n} recall@20" for n in sets) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(sets)))
    for mode in MODES:
        cells = " | ".join(f"{results[n][mode][0]:.3f} | {results[n][mode][1]:.3f}" for n in sets)
        print(f"| {mode} | {cells} |")


def sweep(name: str, settings: RetrievalSettings, work: Path) -> None:
    """Grid over the fusion and feedback parameters on one set (the shipped values were
    chosen on dbpedia-5k, from a stable neighbourhood rather than the single best cell, and
    then confirmed on msmarco-5k)."""
    corpus, queries, qrels = load_set(name)
    index = build_index(name, corpus, settings, work)
    print("| keyword_weight | rrf_k | ranker | feedback_weight | feedback_docs | nDCG@10 | recall@20 |")
    print("|---|---|---|---|---|---|---|")
    for w_kw, k in itertools.product((0.2, 0.3, 0.5), (10, 60)):
        base = settings.model_copy(update={"keyword_weight": w_kw, "rrf_k": k})
        nd, rc = evaluate(index, queries, qrels, base, SearchOptions(max_num_results=20, ranker="none"))
        print(f"| {w_kw} | {k} | none | - | - | {nd:.3f} | {rc:.3f} |", flush=True)
        for beta, docs in itertools.product((0.2, 0.3, 0.5), (3, 5)):
            tuned = base.model_copy(update={"feedback_weight": beta, "feedback_docs": docs})
            nd, rc = evaluate(index, queries, qrels, tuned, SearchOptions(max_num_results=20, ranker="auto"))
            print(f"| {w_kw} | {k} | auto | {beta} | {docs} | {nd:.3f} | {rc:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["msmarco-5k", "dbpedia-5k"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/spindle-bench-quality"))
    parser.add_argument("--sweep", metavar="SET", help="grid-search fusion parameters on one set")
    args = parser.parse_args()
    settings = RetrievalSettings()
    if args.sweep:
        sweep(args.sweep, settings, args.work)
    else:
        table(args.sets, settings, args.work)


if __name__ == "__main__":
    main()
