"""Ingestion survives ``kill -9``: real server processes, the official SDK, a 60-file batch.

1. One server killed mid-batch and started again on the same data: the batch completes and
   every counter adds up (SQLite by default; PostgreSQL + S3 with ``SPINDLE_TEST_BACKENDS``).
2. Two servers on one PostgreSQL database and one S3 bucket: the one that accepted the batch
   is killed mid-way; the survivor claims its queued files and takes over the files it held
   (their leases), and the batch completes there within a bounded time.

Ingestion is slowed down for a real "mid-batch" (two files at a time, multi-page files), and
the ingestion lease is short so a takeover is quick. What is asserted is what the metadata
store holds (statuses, ``file_counts``), not searches: the vector index is still per process.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

sys.path.insert(0, str(harness.REPO_ROOT))
from tests.pgserver import PostgresServer, PostgresUnavailable  # noqa: E402
from tests.s3server import S3Server, S3Unavailable  # noqa: E402

# One SDK is enough: this is about the server processes. Two server starts and 60 files
# ingested two at a time take well over the default 120 s on a loaded 2-core machine.
pytestmark = [pytest.mark.min_sdk(2), pytest.mark.timeout(420)]
LEASE_S = 2.0
FILES = 60
SLOW = {"SPINDLE_SANDBOX_ENABLED": "false", "SPINDLE_RETRIEVAL_INGEST_CONCURRENCY": "2",
        "SPINDLE_RETRIEVAL_INGEST_LEASE_S": str(LEASE_S)}
WORDS = ("harbour lantern granite ledger orchard quarry tide signal copper meadow beacon archive "
         "ferry mill compass glacier summit delta canyon prairie").split()


def _document(i: int) -> bytes:
    rng = random.Random(i)
    body = " ".join(rng.choice(WORDS) for _ in range(900))
    return f"Document {i} carries the marker zq{i:04d}x. {body}".encode()



def _start_batch(client: Any) -> tuple[str, str, list[str]]:
    vs = client.vector_stores.create(name="kill me mid-batch")
    ids = [client.files.create(file=(f"doc{i}.txt", _document(i)), purpose="assistants").id for i in range(FILES)]
    batch = client.vector_stores.file_batches.create(vector_store_id=vs.id, file_ids=ids)
    return vs.id, batch.id, ids


def _mid_batch(client: Any, vs_id: str, batch_id: str) -> Any:
    """Wait until some files are done and most are not: the moment to kill."""
    def some() -> Any:
        batch = client.vector_stores.file_batches.retrieve(batch_id, vector_store_id=vs_id)
        return batch if 2 <= batch.file_counts.completed <= FILES - 20 else None
    return harness.wait_until(some, 120, "the batch to be part-way")


def _assert_complete(client: Any, vs_id: str, batch_id: str, ids: list[str]) -> None:
    batch = client.vector_stores.file_batches.retrieve(batch_id, vector_store_id=vs_id)
    assert batch.status == "completed"
    counts = batch.file_counts
    assert (counts.completed, counts.in_progress, counts.failed, counts.cancelled, counts.total) == \
        (FILES, 0, 0, 0, FILES), counts
    store = client.vector_stores.retrieve(vs_id)
    assert (store.file_counts.completed, store.file_counts.in_progress, store.file_counts.total) == \
        (FILES, 0, FILES), store.file_counts
    listed = list(client.vector_stores.files.list(vector_store_id=vs_id, limit=100))
    assert sorted(f.id for f in listed) == sorted(ids)
    assert all(f.status == "completed" and f.usage_bytes > 0 for f in listed), \
        [(f.id, f.status, f.last_error) for f in listed if f.status != "completed"]
    assert store.usage_bytes == sum(f.usage_bytes for f in listed)  # counted once per file


def test_a_batch_killed_mid_way_completes_after_a_restart(tmp_path: Path) -> None:
    server = harness.start_server(None, tmp_path / "data", SLOW, log_path=tmp_path / "server.log")
    try:
        client = harness.make_client("openai", server.base_url)
        vs_id, batch_id, ids = _start_batch(client)
        at_kill = _mid_batch(client, vs_id, batch_id)
        server.kill9()
        server.start()
        client = harness.make_client("openai", server.base_url)
        harness.wait_until(lambda: client.vector_stores.file_batches.retrieve(batch_id, vector_store_id=vs_id).status
              == "completed", 180, "the batch to complete after the restart")
        _assert_complete(client, vs_id, batch_id, ids)
        assert at_kill.file_counts.completed < FILES  # it really was killed mid-batch
        # the restarted process's own index has the files that were mid-flight when it died
        hits = client.vector_stores.search(vs_id, query=f"zq{FILES - 1:04d}x").data
        assert hits and hits[0].filename == f"doc{FILES - 1}.txt"
        client.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_backends() -> Iterator[tuple[PostgresServer, S3Server]]:
    try:
        database = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is needed here: {exc}")
    try:
        blobs = S3Server().start(harness.spindle_python())
    except S3Unavailable as exc:
        database.stop()
        pytest.fail(f"an S3 server is needed here: {exc}")
    yield database, blobs
    blobs.stop()
    database.stop()


def test_the_survivor_finishes_the_batch_of_a_killed_process(shared_backends: tuple[PostgresServer, S3Server],
                                                             tmp_path: Path) -> None:
    database, blobs = shared_backends
    bucket = "ingest-" + secrets.token_hex(4)
    blobs.create_bucket(bucket)
    env = {**SLOW, **blobs.env(), "SPINDLE_BLOB_URL": f"s3://{bucket}/files",
           "SPINDLE_DATABASE_URL": database.create_database("i_" + secrets.token_hex(6))}
    a = harness.start_server(None, tmp_path / "a", env, log_path=tmp_path / "a.log")
    b = harness.start_server(None, tmp_path / "b", env, log_path=tmp_path / "b.log")
    try:
        client_a, client_b = harness.make_client("openai", a.base_url), harness.make_client("openai", b.base_url)
        vs_id, batch_id, ids = _start_batch(client_a)
        at_kill = _mid_batch(client_b, vs_id, batch_id)
        a.kill9()
        killed = time.monotonic()
        harness.wait_until(lambda: client_b.vector_stores.file_batches.retrieve(batch_id, vector_store_id=vs_id).status
              == "completed", 180, "the survivor to complete the batch")
        took = time.monotonic() - killed
        _assert_complete(client_b, vs_id, batch_id, ids)
        assert at_kill.file_counts.in_progress >= 20
        # Bounded: what was left needs at most a lease to be taken over plus the survivor's own
        # ingestion time for those files (at most FILES - 2 of them, two at a time).
        assert took < LEASE_S * 2 + 120, took
        log = b.log_text()
        assert "took over the ingestion" in log  # files a held (claimed, leased) when it died, not only queued ones
        assert "Traceback" not in log, log[-3000:]
        client_a.close()
        client_b.close()
    finally:
        a.stop()
        b.stop()
