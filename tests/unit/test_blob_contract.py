"""The BlobStore contract, parametrized over the backends: the local directory and S3 (a
real S3-protocol server, moto_server, over HTTP: tests/s3server.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spindle.store.base import BlobStore
from spindle.store.blobs import LocalBlobStore
from spindle.store.s3 import S3BlobStore
from tests.s3server import S3Server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    saved = {k: os.environ.get(k) for k in server.env()}
    server.apply_env()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _local(tmp: Path, _s3: Callable[[], S3Server]) -> BlobStore:
    return LocalBlobStore(tmp / "files")


def _s3(tmp: Path, s3: Callable[[], S3Server]) -> BlobStore:
    bucket = "b-" + secrets.token_hex(4)
    s3().create_bucket(bucket)
    return S3BlobStore(f"s3://{bucket}/some/prefix", tmp, cache_bytes=3 * 1024 * 1024)


BACKENDS = {"local": _local, "s3": _s3}


@pytest.fixture(params=sorted(BACKENDS))
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    store = BACKENDS[request.param](tmp_path, lambda: request.getfixturevalue("s3"))
    store.open_sync()
    return store


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _staged(store: BlobStore, data: bytes) -> Path:
    path = store.staging_dir() / secrets.token_hex(6)
    path.write_bytes(data)
    return path


def test_put_read_stream_local_path_delete(blobs: BlobStore) -> None:
    async def scenario() -> None:
        data = os.urandom(3 * 1024 * 1024 + 17)  # more than one stream chunk
        source = _staged(blobs, data)
        await blobs.put_file("file-a", source)
        assert not source.exists()  # a staged upload is moved, not copied
        assert await blobs.read("file-a") == data
        chunks = [c async for c in blobs.stream("file-a", chunk_size=1 << 20)]
        assert len(chunks) >= 3 and all(len(c) <= 1 << 20 for c in chunks) and b"".join(chunks) == data
        assert (await blobs.local_path("file-a")).read_bytes() == data
        await blobs.put_bytes("file-b", b"small")
        assert await blobs.read("file-b") == b"small"
        await blobs.delete("file-a")
        with pytest.raises(FileNotFoundError):
            await blobs.read("file-a")
        with pytest.raises(FileNotFoundError):
            await blobs.local_path("file-a")
        await blobs.delete("file-a")  # deleting twice is fine

    run(scenario())


def test_multipart_upload_of_a_large_file(blobs: BlobStore) -> None:
    async def scenario() -> None:
        data = os.urandom(20 * 1024 * 1024 + 3)  # above the multipart threshold
        await blobs.put_file("big", _staged(blobs, data))
        digest = hashlib.sha256()
        async for chunk in blobs.stream("big"):
            digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()

    run(scenario())


def test_a_failed_upload_leaves_nothing(blobs: BlobStore) -> None:
    async def scenario() -> None:
        missing = blobs.staging_dir() / "never-written"
        with pytest.raises(OSError):
            await blobs.put_file("ghost", missing)
        with pytest.raises(FileNotFoundError):
            await blobs.read("ghost")

    run(scenario())


def test_bad_keys_are_refused(blobs: BlobStore) -> None:
    async def scenario() -> None:
        for key in ("../escape", "a/b", ".hidden"):
            with pytest.raises(ValueError):
                await blobs.put_bytes(key, b"x")

    run(scenario())


def test_s3_local_cache_stays_bounded(tmp_path: Path, s3: S3Server) -> None:
    s3.create_bucket("cache-test")
    store = S3BlobStore("s3://cache-test", tmp_path, cache_bytes=2 * 1024 * 1024)
    store.open_sync()

    async def scenario() -> None:
        for i in range(5):
            await store.put_bytes(f"f{i}", os.urandom(900 * 1024))
            assert len((await store.local_path(f"f{i}")).read_bytes()) == 900 * 1024
        cached = [p for p in (tmp_path / "s3-cache").iterdir() if p.is_file()]
        assert sum(p.stat().st_size for p in cached) <= 2 * 1024 * 1024
        assert (tmp_path / "s3-cache" / "f4").exists()  # the newest stays
        assert (await store.local_path("f0")).read_bytes()  # an evicted one comes back

    run(scenario())
