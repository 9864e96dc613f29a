"""Benchmark of hostile HTTP input against a real ``spindle serve`` (not a timed test):

    .venv/bin/python bench/bench_http_input.py [--slow 5000] [--body-mb 100]

Prints:
  * a ``--body-mb`` MB JSON body (sent chunked): the answer, how long it took and how much the
    server's peak RSS (the kernel's VmHWM) grew;
  * a slowloris of ``--slow`` connections that never finish their headers: the server's open
    file descriptors and the latency of a normal request, over time, with the default settings
    (headers within ``SPINDLE_HTTP_HEADER_TIMEOUT_S``; at most ``SPINDLE_HTTP_MAX_CONNECTIONS``).
Loopback only; every socket is closed at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from tests.e2e.harness import SpindleServer  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def big_body(mb: int) -> Iterator[bytes]:
    yield b'{"model": "m", "instructions": "'
    for _ in range(mb):
        yield b"x" * (1 << 20)
    yield b'"}'


def bench_body(server: SpindleServer, pid: int, mb: int) -> None:
    before = peak_rss_mb(pid)
    started = time.monotonic()
    try:
        response = httpx.post(server.base_url + "/v1/assistants", content=big_body(mb),
                              headers={"content-type": "application/json"}, timeout=120)
        answer = f"{response.status_code} {response.json()['error'].get('code')}"
    except httpx.TransportError as exc:  # answered and closed while we were still sending
        answer = f"closed ({type(exc).__name__})"
    print(f"| {mb} MB JSON body | {answer} | {time.monotonic() - started:.2f} s | "
          f"peak RSS +{peak_rss_mb(pid) - before:.0f} MB |")


def bench_slowloris(server: SpindleServer, pid: int, count: int) -> None:
    sockets: list[socket.socket] = []
    started = time.monotonic()
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.send(b"GET /v1/assistants HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sockets.append(sock)
        print(f"| slowloris: {count} connections opened | {time.monotonic() - started:.1f} s | | |")
        for at in (1, 5, 9, 12, 15):
            while time.monotonic() - started < at:
                time.sleep(0.05)
            t0 = time.monotonic()
            try:
                status = str(httpx.get(server.base_url + "/v1/assistants", timeout=10).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            print(f"| t = {at} s | server fds {open_fds(pid)} | normal GET {status} | "
                  f"{(time.monotonic() - t0) * 1000:.0f} ms |")
    finally:
        for sock in sockets:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", type=int, default=5000, help="slow connections to open")
    parser.add_argument("--body-mb", type=int, default=100, help="size of the oversized JSON body")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-http-"))
    with SpindleServer(root / "data", upstream=None, env={"SPINDLE_SANDBOX_ENABLED": "false"},
                       log_path=root / "spindle.log") as server:
        server.start()
        assert server.child is not None and server.child.process is not None
        pid = server.child.process.pid
        print("| attack | result | time | server |")
        print("|---|---|---|---|")
        bench_body(server, pid, args.body_mb)
        bench_slowloris(server, pid, args.slow)
    print(f"server log: {root / 'spindle.log'}")


if __name__ == "__main__":
    main()
