"""The OpenAI-compatible /embeddings client, against an in-process fake API."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from spindle.retrieval.chunker import Chunk
from spindle.retrieval.embedding import EmbeddingError
from spindle.retrieval.embedding.remote import RemoteEmbedder
from spindle.retrieval.settings import RetrievalSettings


def _vector(text: str, dims: int) -> list[float]:
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    return (rng.standard_normal(dims) * 3).tolist()


def _embedder(handler, **overrides) -> RemoteEmbedder:  # type: ignore[no-untyped-def]
    settings = RetrievalSettings(embeddings_base_url="http://emb.test/v1", embeddings_api_key="sk-e",
                                 embeddings_batch_size=2, **overrides)
    embedder = RemoteEmbedder(settings)
    embedder._client = httpx.Client(transport=httpx.MockTransport(handler), headers={"Authorization": "Bearer sk-e"})
    return embedder


def test_batches_orders_and_normalises(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        assert request.url.path == "/v1/embeddings" and request.headers["authorization"] == "Bearer sk-e"
        data = [{"index": i, "embedding": _vector(t, body["dimensions"])} for i, t in enumerate(body["input"])]
        return httpx.Response(200, json={"data": list(reversed(data))})  # any order: sorted by index

    embedder = _embedder(handler)
    chunks = [Chunk(i, 0, 1, 0, 1, f"chunk {i}") for i in range(5)]
    vectors = embedder.embed_chunks("", chunks)
    assert vectors.shape == (5, 256) and embedder.dimensions == 256
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [len(b["input"]) for b in seen] == [2, 2, 1]
    assert seen[0]["model"] == "text-embedding-3-large" and seen[0]["dimensions"] == 256
    expected = np.asarray(_vector("chunk 3", 256))
    assert np.allclose(vectors[3], expected / np.linalg.norm(expected), atol=1e-5)
    assert embedder.identity == "remote:text-embedding-3-large:256"


def test_retries_rate_limits_then_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("spindle.retrieval.embedding.remote.time.sleep", lambda s: None)
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(429, json={"error": {"message": "slow down"}})
        body = json.loads(request.content)
        return httpx.Response(200, json={"data": [{"index": i, "embedding": [1.0, 0.0]}
                                                  for i in range(len(body["input"]))]})

    assert _embedder(flaky, embeddings_dimensions=0).embed_queries(["q"]).shape == (1, 2)
    assert calls["n"] == 3

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "bad model"}})

    with pytest.raises(EmbeddingError, match="400"):
        _embedder(broken).embed_queries(["q"])
