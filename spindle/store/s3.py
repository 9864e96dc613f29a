"""File bytes in S3 or any S3-compatible store (``SPINDLE_BLOB_URL=s3://bucket/prefix``).

Credentials, region and endpoint are read the standard way by boto3 (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for MinIO, Ceph, R2, moto).

- Uploads are spooled to a local staging directory by the API (bounded by the upload limit)
  and sent with boto3's managed transfer: multipart above 8 MiB, parts in parallel. An object
  becomes visible only when its upload completes, so a failed upload leaves nothing.
- Downloads stream in chunks (``files.content`` never holds a whole file in memory).
- ``local_path`` (parsers and the sandbox need local bytes) is served from a bounded local
  cache: a file is downloaded once to a temporary name and renamed into place; the least
  recently used copies are removed when the cache grows past its size.

boto3 is synchronous; every call runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spindle.store.base import BlobStore

_MULTIPART_THRESHOLD = 8 * 1024 * 1024


class S3BlobStore(BlobStore):
    def __init__(self, url: str, local_dir: Path, cache_bytes: int = 2 * 1024**3) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("SPINDLE_BLOB_URL must look like s3://bucket or s3://bucket/prefix")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self._staging = local_dir / ".staging"
        self._cache = local_dir / "s3-cache"
        self.cache_bytes = cache_bytes
        self._cache_lock = threading.Lock()
        self._client: Any = None
        self._transfer: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    def open_sync(self) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self._client = boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        self._transfer = TransferConfig(multipart_threshold=_MULTIPART_THRESHOLD, multipart_chunksize=_MULTIPART_THRESHOLD,
                                        max_concurrency=4)
        # Fails here, at start, with boto3's own message when the bucket or credentials are wrong.
        self._client.head_bucket(Bucket=self.bucket)
        for directory in (self._staging, self._cache):
            directory.mkdir(parents=True, exist_ok=True)
            for leftover in directory.glob("*.part"):
                leftover.unlink(missing_ok=True)
        for leftover in self._staging.iterdir():
            leftover.unlink(missing_ok=True)

    def _key(self, key: str) -> str:
        if "/" in key or key.startswith(".") or not key:
            raise ValueError(f"bad blob key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def staging_dir(self) -> Path:
        return self._staging

    def ready(self) -> None:
        self._client.head_bucket(Bucket=self.bucket)

    # -- writes ----------------------------------------------------------------------------

    async def put_file(self, key: str, source: Path) -> None:
        def upload() -> None:
            self._client.upload_file(str(source), self.bucket, self._key(key), Config=self._transfer)
            if source.parent == self._staging:
                source.unlink(missing_ok=True)

        await asyncio.to_thread(upload)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    async def delete(self, key: str) -> None:
        def remove() -> None:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
            (self._cache / key).unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    # -- reads -----------------------------------------------------------------------------

    def _get(self, key: str) -> Any:
        from botocore.exceptions import ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            raise

    async def read(self, key: str) -> bytes:
        def get() -> bytes:
            body = self._get(key)
            try:
                return bytes(body.read())
            finally:
                body.close()

        return await asyncio.to_thread(get)

    async def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:  # type: ignore[override]
        body = await asyncio.to_thread(self._get, key)
        try:
            while chunk := await asyncio.to_thread(body.read, chunk_size):
                yield chunk
        finally:
            body.close()

    async def local_path(self, key: str) -> Path:
        return await asyncio.to_thread(self._cached, key)

    def _cached(self, key: str) -> Path:
        target = self._cache / key
        self._key(key)  # validates the name before it becomes a path
        if target.exists():
            os.utime(target)  # recently used
            return target
        part = target.with_name(f"{key}.{threading.get_ident()}.part")
        from botocore.exceptions import ClientError

        try:
            self._client.download_file(self.bucket, self._key(key), str(part), Config=self._transfer)
        except ClientError as exc:
            part.unlink(missing_ok=True)
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            raise
        os.replace(part, target)
        self._evict(keep=target)
        return target

    def _evict(self, keep: Path) -> None:
        with self._cache_lock:
            entries = [(p.stat().st_mtime, p.stat().st_size, p) for p in self._cache.iterdir()
                       if p.is_file() and not p.name.endswith(".part")]
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries, key=lambda e: e[0]):
                if total <= self.cache_bytes:
                    break
                if path != keep:
                    path.unlink(missing_ok=True)
                    total -= size
