"""Retrieval quality: nDCG@10 and recall@100 with bootstrap intervals, and leave-one-set-out.

Sets: the three BEIR-format sets of ../shared/data/retrieval (msmarco-5k, dbpedia-5k,
business-reports) and four generated here (bench/datasets): ``needles`` (facts inside pages
of filler, short near-duplicates beside them), ``identifiers`` (invoice numbers, punctuated
amounts, part codes, names), and ``msmarco-concat`` / ``dbpedia-concat`` (the shared sets'
documents concatenated into 800-token chunks). Every corpus entry is ingested as one ``.txt``
file through the real pipeline (parse, o200k chunking, MiniLM embedding, tantivy + faiss)
into one store per set, and every query goes through ``spindle.retrieval.search.search`` -
the function the endpoint and the tool call. Results are ranked by file (a file's first
chunk counts), with linear gains as pytrec_eval / BEIR do; a qrel grade > 0 is relevant.

Rows: keyword-only (BM25), semantic-only (MiniLM), plain RRF (k=60, equal weights), the
previous default (RRF k=10, keyword weight 0.5, feedback ranker), each component of the
shipped default alone, the ``feedback`` ranker on top, and the shipped default (``auto``).
Each cell is the mean over queries with a 95% bootstrap interval (1,000 resamples of the
queries); the check table gives paired bootstrap intervals of default minus the better
single mode and default minus plain RRF (the default holds when the interval's upper end is
>= 0, i.e. it is not measurably worse).

Leave-one-set-out: for every set, the configuration (fusion k, keyword weight, exact-term
and window scoring on/off, ranker) with the best mean nDCG@10 on the *other* sets is scored
on the held-out one, next to the shipped default (which has no fitted parameter).

    python bench/bench_quality.py                       # every set
    python bench/bench_quality.py --sets needles identifiers

Indexes are cached under --work (delete a set's folder to re-ingest it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.datasets.identifiers import identifiers  # noqa: E402
from bench.datasets.longdocs import concatenated, needles  # noqa: E402
from spindle.retrieval import tokenizer  # noqa: E402
from spindle.retrieval.chunker import Chunk, ChunkingStrategy  # noqa: E402
from spindle.retrieval.embedding import Embedder, get_embedder  # noqa: E402
from spindle.retrieval.index.store import StoreIndex  # noqa: E402
from spindle.retrieval.pipeline import ingest  # noqa: E402
from spindle.retrieval.search import SearchOptions, search  # noqa: E402
from spindle.retrieval.settings import RetrievalSettings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "retrieval"
SHARED = ["msmarco-5k", "dbpedia-5k", "business-reports"]
GENERATED = ["needles", "identifiers", "msmarco-concat", "dbpedia-concat"]
Set = tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]
RESAMPLES = 1000


def load_shared(name: str) -> Set:
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
    qrels = {qid: rel for qid, rel in qrels.items() if any(g > 0 for g in rel.values())}
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return corpus, queries, qrels


def load_set(name: str, settings: RetrievalSettings) -> Set:
    if name in SHARED:
        return load_shared(name)
    enc = tokenizer.load(settings.vocab_dir)

    def count(text: str) -> int:
        return len(enc.encode(text))

    if name == "needles":
        return needles(DATA, count)
    if name == "identifiers":
        return identifiers()
    if name.endswith("-concat"):
        return concatenated(load_shared(name.removesuffix("-concat") + "-5k"), count)
    raise SystemExit(f"unknown set {name}")


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
    print(f"# ingested {name}: {len(corpus)} files in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return index


@dataclass(frozen=True)
class Config:
    """One way of ranking: fusion parameters plus the search options."""

    rrf_k: float = 60.0
    keyword_weight: float = 1.0
    modes: tuple[str, ...] = ("keyword", "semantic")
    ranker: str = "none"  # "none" or "feedback"
    rare_terms: bool = False
    window_scoring: bool = False
    shipped: bool = False  # the settings and options exactly as shipped

    def apply(self, base: RetrievalSettings, max_results: int) -> tuple[RetrievalSettings, SearchOptions]:
        if self.shipped:
            return base, SearchOptions(max_num_results=max_results)
        settings = base.model_copy(update={"rrf_k": self.rrf_k, "keyword_weight": self.keyword_weight,
                                           "semantic_weight": 1.0, "default_ranker": self.ranker})
        return settings, SearchOptions(max_num_results=max_results, ranker="auto", modes=self.modes,
                                       rare_terms=self.rare_terms, window_scoring=self.window_scoring)


ROWS: dict[str, Config] = {
    "keyword only (BM25)": Config(modes=("keyword",)),
    "semantic only (MiniLM)": Config(modes=("semantic",)),
    "semantic only + window scoring": Config(modes=("semantic",), window_scoring=True),
    "plain RRF k=60, equal weights": Config(),
    "previous default (RRF k=10, kw 0.5, feedback)": Config(rrf_k=10, keyword_weight=0.5, ranker="feedback"),
    "RRF k=60 + window scoring": Config(window_scoring=True),
    "RRF k=60 + exact terms": Config(rare_terms=True),
    "RRF k=60 + both + feedback ranker": Config(rare_terms=True, window_scoring=True, ranker="feedback"),
    "shipped default (auto)": Config(shipped=True),
}


@dataclass
class Scores:
    ndcg: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)


class _QueryCache(Embedder):
    """The real embedder, each query embedded once: every ranking of a query sees the same vector,
    and the benchmark does not spend its time re-embedding a query per row."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.identity, self.dimensions = inner.identity, inner.dimensions
        self.cache: dict[str, np.ndarray] = {}

    def embed_chunks(self, text: str, chunks: list[Chunk]) -> np.ndarray:
        return self.inner.embed_chunks(text, chunks)

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        missing = [q for q in queries if q not in self.cache]
        if missing:
            for query, vec in zip(missing, self.inner.embed_queries(missing), strict=True):
                self.cache[query] = vec
        return np.stack([self.cache[q] for q in queries])


_EMBEDDERS: dict[int, _QueryCache] = {}


def ranked_files(index: StoreIndex, text: str, settings: RetrievalSettings, options: SearchOptions) -> list[str]:
    inner = get_embedder(settings)
    embedder = _EMBEDDERS.setdefault(id(inner), _QueryCache(inner))
    hits = search([("vs", index)], [text], embedder, settings, options)
    return list(dict.fromkeys(hit.file_id for hit in hits))


def ndcg10(ranked: list[str], rel: dict[str, int]) -> float:
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def evaluate(index: StoreIndex, data: Set, base: RetrievalSettings, config: Config, recall: bool = True) -> Scores:
    _, queries, qrels = data
    out = Scores()
    settings10, options10 = config.apply(base, 10)
    settings100, options100 = config.apply(base, 100)
    for qid, text in sorted(queries.items()):
        rel = qrels[qid]
        out.ndcg.append(ndcg10(ranked_files(index, text, settings10, options10), rel))
        if recall:
            relevant = {d for d, g in rel.items() if g > 0}
            top = set(ranked_files(index, text, settings100, options100)[:100])
            out.recall.append(len(relevant & top) / len(relevant))
    return out


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over queries."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(mean([values[rng.randrange(n)] for _ in range(n)]) for _ in range(RESAMPLES))
    return means[int(0.025 * RESAMPLES)], means[int(0.975 * RESAMPLES) - 1]


def cell(values: list[float]) -> str:
    lo, hi = interval(values)
    return f"{mean(values):.3f} [{lo:.3f}, {hi:.3f}]"


def paired(a: list[float], b: list[float]) -> str:
    diff = [x - y for x, y in zip(a, b, strict=True)]
    lo, hi = interval(diff, seed=1)
    verdict = "holds" if hi >= 0 else "WORSE"
    return f"{mean(diff):+.3f} [{lo:+.3f}, {hi:+.3f}] {verdict}"


def grid() -> dict[str, Config]:
    out = {}
    for k, w, ext, ranker in itertools.product((10.0, 60.0), (0.5, 1.0), (False, True), ("none", "feedback")):
        name = f"k={k:g} kw={w:g} exact+windows={'on' if ext else 'off'} ranker={ranker}"
        out[name] = Config(rrf_k=k, keyword_weight=w, rare_terms=ext, window_scoring=ext, ranker=ranker)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=SHARED + GENERATED)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spindle-bench-quality"))
    parser.add_argument("--no-loso", action="store_true", help="skip the leave-one-set-out grid")
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    base = RetrievalSettings()
    loaded: dict[str, tuple[StoreIndex, Set]] = {}
    for name in args.sets:
        data = load_set(name, base)
        loaded[name] = (build_index(name, data[0], base, args.work), data)
        print(f"# {name}: {len(data[0])} files, {len(data[1])} queries", file=sys.stderr)
    if args.build_only:
        return
    results: dict[str, dict[str, Scores]] = {}
    for name, (index, data) in loaded.items():
        results[name] = {row: evaluate(index, data, base, config) for row, config in ROWS.items()}
        print(f"\n## {name} ({len(data[1])} queries, {len(data[0])} files)\n")
        print("| ranking | nDCG@10 [95% CI] | recall@100 [95% CI] |\n|---|---|---|")
        for row in ROWS:
            print(f"| {row} | {cell(results[name][row].ndcg)} | {cell(results[name][row].recall)} |")
        sys.stdout.flush()
    print("\n## Check: shipped default minus the better single mode / minus plain RRF (nDCG@10, paired bootstrap)\n")
    print("| set | better single mode | default - better single | default - plain RRF k=60 |\n|---|---|---|---|")
    for name, rows in results.items():
        shipped = rows["shipped default (auto)"].ndcg
        single = max(("keyword only (BM25)", "semantic only (MiniLM)"), key=lambda r: mean(rows[r].ndcg))
        print(f"| {name} | {single.split(' (')[0]} | {paired(shipped, rows[single].ndcg)} | "
              f"{paired(shipped, rows['plain RRF k=60, equal weights'].ndcg)} |")
    if args.no_loso or len(loaded) < 2:
        return
    sys.stdout.flush()
    configs = grid()
    scores: dict[str, dict[str, float]] = {name: {} for name in loaded}
    for name, (index, data) in loaded.items():
        for cname, config in configs.items():
            scores[name][cname] = mean(evaluate(index, data, base, config, recall=False).ndcg)
    print("\n## Leave-one-set-out (nDCG@10): configuration chosen on the other sets, scored on the held-out one\n")
    print("| held-out set | chosen on the others | its held-out nDCG@10 | shipped default | plain RRF k=60 |")
    print("|---|---|---|---|---|")
    for name in loaded:
        others = [o for o in loaded if o != name]
        best = max(configs, key=lambda c: mean([scores[o][c] for o in others]))
        print(f"| {name} | {best} | {scores[name][best]:.3f} | "
              f"{mean(results[name]['shipped default (auto)'].ndcg):.3f} | "
              f"{mean(results[name]['plain RRF k=60, equal weights'].ndcg):.3f} |")
    print("\n## The grid (nDCG@10 per set)\n")
    print("| configuration | " + " | ".join(loaded) + " |\n|---|" + "---|" * len(loaded))
    for cname in configs:
        print(f"| {cname} | " + " | ".join(f"{scores[n][cname]:.3f}" for n in loaded) + " |")


if __name__ == "__main__":
    main()
