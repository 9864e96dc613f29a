"""The vector index of one store (faiss): exact while small, IVF with int8 codes when large.

Up to ``ivf_threshold`` vectors the index is a brute-force inner product over float16 codes
(behind an id map). Past it, the store's vectors (read back from the chunk store, the source of truth) train
an ``IndexIVFScalarQuantizer`` with 8-bit codes: a quarter of the memory and a few thousand
vectors scanned per query instead of all of them. Retraining happens only when the store has
grown 4x since the last training, so the cost per added vector stays constant.

Persistence is a snapshot plus replay: ``vectors-<vgen>.faiss`` holds the index as of vector
generation ``vgen``; on open, vectors written after it (and deletions since) are replayed from
SQLite. A snapshot is rewritten only after max(``snapshot_min_delta``, 10% of the index)
changes, so adding a file never rewrites the store.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import faiss
import numpy as np

from spindle.retrieval.index.chunkstore import ChunkStore
from spindle.retrieval.index.rwlock import RWLock

# A single query scans memory; more OpenMP threads only add wake-up jitter. Parallelism
# comes from concurrent requests instead.
faiss.omp_set_num_threads(1)


def _flat(dim: int) -> faiss.Index:
    # Brute force over float16 codes: half the memory traffic of float32 (2.5x faster scans at
    # 100k vectors here) with rounding far below the model's own noise - exact for ranking.
    quantizer = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIDMap2(quantizer)


def _remove(index: faiss.Index, ids: np.ndarray) -> None:
    # An IVF index with a hashtable direct map only removes through an IDSelectorArray.
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    selector = faiss.IDSelectorBatch(ids) if isinstance(index, faiss.IndexIDMap2) else faiss.IDSelectorArray(ids)
    index.remove_ids(selector)


class VectorIndex:
    def __init__(self, directory: Path, dim: int, chunks: ChunkStore, ivf_threshold: int, nprobe: int,
                 snapshot_min_delta: int) -> None:
        self._dir = directory
        self._dim = dim
        self._chunks = chunks
        self._ivf_threshold = ivf_threshold
        self._nprobe = nprobe
        self._snapshot_min_delta = snapshot_min_delta
        self._lock = RWLock()
        self._snapshot_lock = threading.Lock()
        self._retrain_guard = threading.Lock()
        self._retraining = False
        self._trained_at = 0  # vectors present when the IVF was trained; 0 = exact index
        self._index, self._snap_vgen = self._load()
        self._changes = 0

    # -- persistence -----------------------------------------------------------------------
    def _snapshots(self) -> list[tuple[int, Path]]:
        found = []
        for path in self._dir.glob("vectors-*.faiss"):
            try:
                found.append((int(path.stem.split("-", 1)[1]), path))
            except ValueError:
                continue
        return sorted(found)

    def _load(self) -> tuple[faiss.Index, int]:
        snapshots = self._snapshots()
        index, vgen = _flat(self._dim), 0
        if snapshots:
            vgen, path = snapshots[-1]
            index = faiss.read_index(str(path))
            if not isinstance(index, faiss.IndexIDMap2):
                self._trained_at = int(self._chunks.get_meta("ivf_trained_at") or index.ntotal or 1)
        for ids, vectors in self._chunks.iter_vectors(after_vgen=vgen):
            index.add_with_ids(vectors, ids)
        dead = self._chunks.tombstones_after(vgen)
        if len(dead):
            _remove(index, dead)
        return index, vgen

    def maybe_snapshot(self, force: bool = False) -> bool:
        """Write a new snapshot when enough changed since the last; returns whether it did.

        "Enough" grows with the index (10% of it), so the bytes written per added vector stay
        constant and replay on open never exceeds a tenth of the store."""
        if not force and self._changes < max(self._snapshot_min_delta, self.size() // 10):
            return False
        with self._snapshot_lock:
            with self._lock.write():
                vgen = self._chunks.current_vgen()
                blob = faiss.serialize_index(self._index)  # a memory copy; the disk write is unlocked
                self._changes = 0
            path = self._dir / f"vectors-{vgen}.faiss"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(blob.tobytes())
            tmp.replace(path)
            for old_vgen, old in self._snapshots():
                if old_vgen < vgen:
                    old.unlink(missing_ok=True)
            self._chunks.prune_tombstones(vgen)
            self._snap_vgen = vgen
        return True

    # -- writes ----------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        with self._lock.write():
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
            self._changes += len(ids)
        self._maybe_retrain()

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock.write():
            _remove(self._index, np.asarray(ids, dtype=np.int64))
            self._changes += len(ids)

    def _maybe_retrain(self) -> None:
        total = self.size()
        if total <= self._ivf_threshold or (self._trained_at and total < 4 * self._trained_at):
            return
        with self._retrain_guard:
            if self._retraining:  # another thread is on it; its replay will include our vectors
                return
            self._retraining = True
        try:
            self.retrain()
        finally:
            self._retraining = False

    def retrain(self) -> None:
        """Build an IVF-int8 index from every stored vector (runs in the caller's thread)."""
        with self._snapshot_lock:
            vgen = self._chunks.current_vgen()
            ids_parts, vec_parts = [], []
            for ids, vectors in self._chunks.iter_vectors():
                ids_parts.append(ids)
                vec_parts.append(vectors)
            if not ids_parts:
                return
            all_ids, all_vecs = np.concatenate(ids_parts), np.concatenate(vec_parts)
            nlist = max(16, int(4 * math.sqrt(len(all_ids))))
            quantizer = faiss.IndexFlatIP(self._dim)
            ivf = faiss.IndexIVFScalarQuantizer(
                quantizer, self._dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            rng = np.random.default_rng(0)
            sample = all_vecs[rng.choice(len(all_vecs), size=min(len(all_vecs), nlist * 40), replace=False)]
            faiss.omp_set_num_threads(0)  # training is bulk work: use every core
            try:
                ivf.train(sample)
                ivf.add_with_ids(all_vecs, all_ids)
            finally:
                faiss.omp_set_num_threads(1)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # cheap remove_ids
            self._chunks.set_meta("ivf_trained_at", str(len(all_ids)))
            with self._lock.write():
                # replay what changed while training ran
                for ids, vectors in self._chunks.iter_vectors(after_vgen=vgen):
                    ivf.add_with_ids(vectors, ids)
                dead = self._chunks.tombstones_after(vgen)
                if len(dead):
                    _remove(ivf, dead)
                self._index = ivf
                self._trained_at = len(all_ids)
                self._changes = self._snapshot_min_delta  # force the next snapshot
        self.maybe_snapshot()

    # -- reads -----------------------------------------------------------------------------
    @property
    def pending_changes(self) -> int:
        """Vector additions and removals not yet in an on-disk snapshot."""
        return self._changes

    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_ivf(self) -> bool:
        return self._trained_at > 0

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """``(chunk_id, inner product)`` best first, per query; ``allowed`` restricts chunk ids."""
        if k <= 0 or self.size() == 0 or (allowed is not None and len(allowed) == 0):
            return [[] for _ in range(len(queries))]
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        params = None
        if self.is_ivf:
            nprobe = self._nprobe
            if allowed is not None:
                # A narrow filter leaves few allowed ids per list: probe proportionally more
                # lists so k results still turn up.
                fraction = max(len(allowed) / max(self.size(), 1), 1e-6)
                nprobe = int(min(self._index.nlist, math.ceil(self._nprobe / fraction)))  # type: ignore[attr-defined]
            params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
            if allowed is not None:
                params.sel = faiss.IDSelectorBatch(allowed)
        elif allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))  # type: ignore[call-arg,assignment]
        with self._lock.read():
            scores, ids = self._index.search(queries, k, params=params)
        return [
            [(int(i), float(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]
