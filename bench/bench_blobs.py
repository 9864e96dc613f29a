"""Blob throughput: upload and download of one large file (512 MB by default) through the real
server's Files API with the official SDK (``files.create`` / ``files.content``), local data dir
against S3.

Two real Spindle servers (uvicorn processes, tests/e2e/harness.py): one keeps file bytes in its
data dir, the other in a bucket of moto_server (tests/s3server.py; moto keeps objects in its
process memory, so this measures Spindle's path to an S3-protocol server over HTTP, not a
real object store). The servers are measured alternately, ``--rounds`` times each, so machine
noise hits both alike; the table gives medians and every round. The download is streamed to
nothing (``iter_bytes``) and its size checked.

    .venv/bin/python bench/bench_blobs.py [--file-mb 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import harness  # noqa: E402
import openai  # noqa: E402

from tests.s3server import S3Server  # noqa: E402


def transfer(server: harness.SpindleServer, path: Path) -> tuple[float, float]:
    """Seconds to upload ``path`` with ``files.create`` and to stream it back with ``files.content``."""
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-bench", timeout=900, max_retries=0)
    try:
        t0 = time.perf_counter()
        with path.open("rb") as handle:
            created = client.files.create(file=(path.name, handle), purpose="assistants")
        up = time.perf_counter() - t0
        t0 = time.perf_counter()
        size = 0
        with client.files.with_streaming_response.content(created.id) as response:
            for chunk in response.iter_bytes(1 << 20):
                size += len(chunk)
        down = time.perf_counter() - t0
        assert size == path.stat().st_size, (size, path.stat().st_size)
        client.files.delete(created.id)
    finally:
        client.close()
    return up, down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file-mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), f"({os.cpu_count()} cores)")
    s3 = S3Server().start()
    results: dict[str, list[tuple[float, float]]] = {"local data dir": [], "S3 (moto_server)": []}
    with tempfile.TemporaryDirectory(prefix="spindle-bench-blobs-") as tmp:
        root = Path(tmp)
        s3.create_bucket("bench")
        base = {"SPINDLE_SANDBOX_ENABLED": "false"}
        servers = {
            "local data dir": harness.start_server(None, root / "a", base, log_path=root / "a.log"),
            "S3 (moto_server)": harness.start_server(
                None, root / "b", {**base, "SPINDLE_BLOB_URL": "s3://bench/files", **s3.env()},
                log_path=root / "b.log"),
        }
        try:
            big = root / "big.bin"
            with big.open("wb") as handle:
                for _ in range(args.file_mb):
                    handle.write(os.urandom(1 << 20))
            for _ in range(args.rounds):
                for name, server in servers.items():
                    results[name].append(transfer(server, big))
        finally:
            for server in servers.values():
                server.stop()
            s3.stop()
    print(f"\nOne {args.file_mb} MB file through the Files API (official SDK), {args.rounds} rounds, median")
    print("| blobs | upload MB/s | download MB/s | upload s per round | download s per round |")
    print("|---|---|---|---|---|")
    for name, rounds in results.items():
        ups, downs = [u for u, _ in rounds], [d for _, d in rounds]
        print(f"| {name} | {args.file_mb / statistics.median(ups):.0f} | {args.file_mb / statistics.median(downs):.0f}"
              f" | {', '.join(f'{u:.1f}' for u in ups)} | {', '.join(f'{d:.1f}' for d in downs)} |")
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
