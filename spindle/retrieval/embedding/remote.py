"""An OpenAI-compatible ``POST {base}/embeddings`` client (e.g. text-embedding-3-large at 256 dims).

Each chunk's text is sent whole (such models read 8,191 tokens, more than a chunk's 4,096
maximum). Requests are batched, retried on 429/5xx with backoff, and normalised on return.
"""

from __future__ import annotations

import time

import httpx
import numpy as np

from spindle.retrieval.chunker import Chunk
from spindle.retrieval.embedding.base import Embedder, EmbeddingError, normalize_rows
from spindle.retrieval.settings import RetrievalSettings

_RETRIES = 4


class RemoteEmbedder(Embedder):
    def __init__(self, settings: RetrievalSettings) -> None:
        self._url = settings.embeddings_base_url.rstrip("/") + "/embeddings"
        self._model = settings.embeddings_model
        self._dims = settings.embeddings_dimensions
        self._batch = max(1, settings.embeddings_batch_size)
        headers = {"Authorization": f"Bearer {settings.embeddings_api_key}"} if settings.embeddings_api_key else {}
        self._client = httpx.Client(timeout=settings.embeddings_timeout_s, headers=headers)
        self.identity = f"remote:{self._model}:{self._dims or 'native'}"
        self._known_dims = self._dims or 0  # learnt from a response when the model's native size is used

    @property
    def dimensions(self) -> int:  # type: ignore[override]
        if not self._known_dims:
            self._request(["dimension probe"])  # blocking; only ever once, from a worker thread
        return self._known_dims

    def _request(self, texts: list[str]) -> np.ndarray:
        body: dict[str, object] = {"model": self._model, "input": texts, "encoding_format": "float"}
        if self._dims:
            body["dimensions"] = self._dims
        delay = 1.0
        for attempt in range(_RETRIES + 1):
            try:
                response = self._client.post(self._url, json=body)
            except httpx.HTTPError as exc:
                if attempt == _RETRIES:
                    raise EmbeddingError(f"embeddings request failed: {exc}") from exc
            else:
                if response.status_code == 200:
                    data = sorted(response.json()["data"], key=lambda item: item["index"])
                    matrix = np.asarray([item["embedding"] for item in data], dtype=np.float32)
                    if matrix.shape[0] != len(texts):
                        raise EmbeddingError("embeddings response has the wrong number of vectors")
                    self._known_dims = int(matrix.shape[1])
                    return normalize_rows(matrix)
                if response.status_code != 429 and response.status_code < 500 or attempt == _RETRIES:
                    raise EmbeddingError(f"embeddings API answered {response.status_code}: {response.text[:200]}")
            time.sleep(delay)
            delay *= 2
        raise EmbeddingError("unreachable")

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        parts = [self._request(texts[i : i + self._batch]) for i in range(0, len(texts), self._batch)]
        return np.concatenate(parts) if parts else np.zeros((0, self._known_dims), np.float32)

    def embed_chunks(self, text: str, chunks: list[Chunk]) -> np.ndarray:
        return self._embed_texts([chunk.text for chunk in chunks])

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        return self._embed_texts(queries)

    def close(self) -> None:
        self._client.close()
