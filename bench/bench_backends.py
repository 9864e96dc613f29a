"""Backends benchmark (issue 10): the embedded SQLite + data dir against PostgreSQL + S3.

(a) Completed runs per second with 32 concurrent streaming clients, one Spindle server on
    SQLite and one on PostgreSQL (a throwaway local cluster, tests/pgserver.py), same scripted
    upstream, measured alternately in rounds so machine noise hits both alike.
(b) Upload and download throughput of one large file (512 MB by default) through the Files
    API: the data dir against S3 (moto_server, tests/s3server.py, which keeps objects in
    memory: it measures Spindle's path to an S3-protocol server, not a real object store).

Run with the main venv: ``.venv/bin/python bench/bench_backends.py [--file-mb 512]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402
from bench_runs import PROMPT, measure_throughput  # noqa: E402

from tests.pgserver import PostgresServer  # noqa: E402
from tests.s3server import S3Server  # noqa: E402

HEADERS = {"Authorization": "Bearer sk-bench", "OpenAI-Beta": "assistants=v2"}


def run_body(server: harness.SpindleServer) -> dict[str, Any]:
    created = httpx.post(f"{server.base_url}/v1/assistants", json={"model": "m"}, headers=HEADERS, timeout=30)
    created.raise_for_status()
    return {"assistant_id": created.json()["id"], "thread": {"messages": [{"role": "user", "content": PROMPT}]},
            "stream": True}


def throughput(servers: dict[str, harness.SpindleServer], rounds: int, seconds: float) -> dict[str, list[float]]:
    bodies = {name: run_body(server) for name, server in servers.items()}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, server in servers.items():
            result = asyncio.run(measure_throughput(f"{server.base_url}/v1/threads/runs", bodies[name], HEADERS,
                                                    "event: thread.run.completed", 32, 100_000, seconds))
            if result["failed"]:
                print(f"  {name}: {result['failed']} runs failed", file=sys.stderr)
            rates[name].append(result["per_second"])
    return rates


def file_transfer(server: harness.SpindleServer, path: Path) -> tuple[float, float]:
    """Seconds to upload ``path`` with the Files API and to download it back (streamed)."""
    with httpx.Client(base_url=f"{server.base_url}/v1", headers=HEADERS, timeout=600) as http:
        t0 = time.perf_counter()
        with path.open("rb") as handle:
            response = http.post("/files", files={"file": (path.name, handle)}, data={"purpose": "assistants"})
        response.raise_for_status()
        up = time.perf_counter() - t0
        file_id = response.json()["id"]
        t0 = time.perf_counter()
        size = 0
        with http.stream("GET", f"/files/{file_id}/content") as download:
            for chunk in download.iter_bytes(1 << 20):
                size += len(chunk)
        down = time.perf_counter() - t0
        assert size == path.stat().st_size, (size, path.stat().st_size)
        http.delete(f"/files/{file_id}")
    return up, down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one throughput measurement")
    parser.add_argument("--file-mb", type=int, default=512)
    args = parser.parse_args()
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), f"({os.cpu_count()} cores)")
    pg, s3 = PostgresServer().start(), S3Server().start()
    with tempfile.TemporaryDirectory(prefix="spindle-bench-") as tmp:
        root = Path(tmp)
        upstream = harness.start_upstream(root)
        upstream.script("bench:", [{"content": ("lorem ipsum " * 100)[:200], "chunk_chars": 4}])
        bucket = "bench"
        s3.create_bucket(bucket)
        no_sandbox = {"SPINDLE_SANDBOX_ENABLED": "false"}
        servers = {
            "SQLite + data dir": harness.start_server(upstream, root / "a", no_sandbox, log_path=root / "a.log"),
            "PostgreSQL + S3": harness.start_server(
                upstream, root / "b", {**no_sandbox, "SPINDLE_DATABASE_URL": pg.create_database("bench"),
                                       "SPINDLE_BLOB_URL": f"s3://{bucket}/files", **s3.env()},
                log_path=root / "b.log"),
        }
        try:
            rates = throughput(servers, args.rounds, args.seconds)
            big = root / "big.bin"
            with big.open("wb") as handle:
                for _ in range(args.file_mb):
                    handle.write(os.urandom(1 << 20))
            transfers = {name: file_transfer(server, big) for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
            upstream.stop()
            pg.stop()
            s3.stop()
    print(f"\n(a) completed runs per second, 32 streaming clients, {args.rounds} rounds of {args.seconds:g} s (median)")
    print("| backend | runs/s | rounds |\n|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"\n(b) one {args.file_mb} MB file through the Files API")
    print("| backend | upload MB/s | download MB/s |\n|---|---|---|")
    for name, (up, down) in transfers.items():
        print(f"| {name} | {args.file_mb / up:.0f} | {args.file_mb / down:.0f} |")
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
