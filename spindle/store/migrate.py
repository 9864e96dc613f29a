"""``spindle migrate``: copy an installation's metadata (and file bytes) to other backends,
e.g. the embedded SQLite + data dir to PostgreSQL + S3, then verify every object.

Objects are copied in insertion order (so lists keep their order), each with its project and
parent; each run's event log is replayed in order (so sequence numbers come out the same);
every File's bytes are copied by key. The target must be empty: a half-finished earlier copy
is refused rather than merged. Verification reads both sides again and compares every object,
every event and a SHA-256 of every file. Stop the server first: a copy of a store that is
being written to is not a snapshot.

To PostgreSQL, the vector stores' search indexes (``<data_dir>/vector_stores/``) are copied
into the database too (``spindle.retrieval.index.pgimport``): a server on PostgreSQL searches
them there. Otherwise they stay in the data dir; point the new installation at it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from spindle.settings import ServerSettings
from spindle.store.base import AppendEvent, BlobStore, MetadataStore, Op, Put
from spindle.store.factory import blob_store, describe, metadata_store

_PAGE = 500


@dataclass
class CopyReport:
    objects: int = 0
    events: int = 0
    runs: int = 0
    files: int = 0
    file_bytes: int = 0
    problems: list[str] = field(default_factory=list)


async def copy_store(source: MetadataStore, target: MetadataStore, report: CopyReport) -> None:
    if await target.dump(limit=1):
        raise RuntimeError("the target database is not empty; migrate into a new, empty database")
    after = 0
    while page := await source.dump(after, _PAGE):
        ops: list[Op] = [Put(item.kind, item.obj, item.project, item.parent) for item in page]
        await target.write(ops)
        report.objects += len(page)
        after = page[-1].seq
    for run_id in await source.event_runs():
        report.runs += 1
        seq = 0
        while batch := await source.read_events(run_id, seq, _PAGE):
            await target.write([AppendEvent(run_id, e.event, e.data) for e in batch])
            report.events += len(batch)
            seq = batch[-1].seq


async def copy_blobs(store: MetadataStore, source: BlobStore, target: BlobStore, report: CopyReport) -> None:
    after = 0
    while page := await store.dump(after, _PAGE):
        after = page[-1].seq
        for item in page:
            if item.kind != "file":
                continue
            key = str(item.obj["id"])
            try:
                path = await source.local_path(key)
            except FileNotFoundError:
                report.problems.append(f"file {key}: no bytes in the source blob store")
                continue
            staged = target.staging_dir() / f"migrate-{secrets.token_hex(6)}"
            await asyncio.to_thread(shutil.copyfile, path, staged)
            size = staged.stat().st_size
            await target.put_file(key, staged)
            report.files += 1
            report.file_bytes += size


async def verify(source: MetadataStore, target: MetadataStore, blobs: tuple[BlobStore, BlobStore] | None,
                 report: CopyReport) -> None:
    """Compare both sides object by object, event by event, file by file."""
    after_a = after_b = 0
    while True:
        a = await source.dump(after_a, _PAGE)
        b = await target.dump(after_b, _PAGE)
        if not a and not b:
            break
        for left, right in zip(a, b, strict=False):
            if (left.kind, left.project, left.parent, left.obj) != (right.kind, right.project, right.parent, right.obj):
                report.problems.append(f"{left.kind} {left.obj.get('id')} differs")
        if len(a) != len(b):
            report.problems.append("the number of objects differs")
            break
        after_a, after_b = a[-1].seq, b[-1].seq
    for run_id in await source.event_runs():
        left_events = [(e.seq, e.event, e.data) for e in await source.read_events(run_id, 0, 10**9)]
        right_events = [(e.seq, e.event, e.data) for e in await target.read_events(run_id, 0, 10**9)]
        if left_events != right_events:
            report.problems.append(f"events of run {run_id} differ")
    if blobs is None:
        return
    after = 0
    while page := await source.dump(after, _PAGE):
        after = page[-1].seq
        for item in page:
            if item.kind == "file":
                key = str(item.obj["id"])
                try:
                    if await _digest(blobs[0], key) != await _digest(blobs[1], key):
                        report.problems.append(f"bytes of file {key} differ")
                except FileNotFoundError:
                    report.problems.append(f"file {key} is missing on one side")


async def _digest(blobs: BlobStore, key: str) -> str:
    digest = hashlib.sha256()
    async for chunk in blobs.stream(key):
        digest.update(chunk)
    return digest.hexdigest()


async def _copy_indexes(root: Path, url: str, report: CopyReport, out: list[str]) -> None:
    """Every embedded vector-store index under ``root`` into the PostgreSQL index."""
    if not root.is_dir():
        return
    from spindle.retrieval.index.pgimport import import_embedded

    stores = files = chunks = 0
    for directory in sorted(p for p in root.iterdir() if (p / "chunks.sqlite").is_file()):
        n_files, n_chunks, problems = await asyncio.to_thread(import_embedded, directory, url)
        stores, files, chunks = stores + 1, files + n_files, chunks + n_chunks
        report.problems.extend(problems)
    out.append(f"search indexes: {stores} vector stores ({files} files, {chunks} chunks) -> PostgreSQL")


async def migrate(data_dir: Path, from_db: str, to_db: str, from_blobs: str | None, to_blobs: str | None,
                  out: list[str]) -> CopyReport:
    """Copy metadata ``from_db`` → ``to_db`` and, when both are given, file bytes
    ``from_blobs`` → ``to_blobs`` (URLs as in the settings; empty = the data dir's own)."""
    report = CopyReport()
    source = metadata_store(ServerSettings(data_dir=data_dir, database_url=from_db))
    target = metadata_store(ServerSettings(data_dir=data_dir, database_url=to_db))
    await source.open()
    await target.open()
    try:
        out.append(f"metadata: {describe(from_db)} -> {describe(to_db)}")
        await copy_store(source, target, report)
        pair: tuple[BlobStore, BlobStore] | None = None
        if from_blobs is not None and to_blobs is not None:
            pair = (blob_store(ServerSettings(data_dir=data_dir, blob_url=from_blobs)),
                    blob_store(ServerSettings(data_dir=data_dir, blob_url=to_blobs)))
            for blobs in pair:
                await asyncio.to_thread(blobs.open_sync)
            out.append(f"files: {describe(from_blobs, 'data dir')} -> {describe(to_blobs, 'data dir')}")
            await copy_blobs(source, pair[0], pair[1], report)
        await verify(source, target, pair, report)
        if to_db.strip().startswith(("postgresql:", "postgres:")):
            await _copy_indexes(data_dir / "vector_stores", to_db.strip(), report, out)
    finally:
        await source.close()
        await target.close()
    out.append(f"copied {report.objects} objects, {report.events} events of {report.runs} runs, "
               f"{report.files} files ({report.file_bytes} bytes)")
    out.append("verified: every object, event and file is the same on both sides" if not report.problems
               else "verification FAILED:\n  " + "\n  ".join(report.problems[:50]))
    return report
