"""The embedded blob store: file bytes in a local directory, written atomically by rename."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from spindle.store.base import BlobStore


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / ".staging"

    def open_sync(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        # Leftovers of uploads cut short by a crash are never referenced; drop them.
        for leftover in self._staging.iterdir():
            leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key[-2:] / key

    def staging_dir(self) -> Path:
        return self._staging

    def ready(self) -> None:
        if not os.access(self._staging, os.W_OK):
            raise OSError(f"{self._staging} is not writable")

    async def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)

        def move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target) if source.parent == self._staging else shutil.copyfile(source, target)

        await asyncio.to_thread(move)

    async def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)

        def write() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._staging / f"{key}.part"
            tmp.write_bytes(data)
            os.replace(tmp, target)

        await asyncio.to_thread(write)

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:  # type: ignore[override]
        handle = await asyncio.to_thread(open, self._path(key), "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.exists():
            raise FileNotFoundError(key)
        return path

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)
