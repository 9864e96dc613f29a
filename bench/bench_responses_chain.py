"""Long ``previous_response_id`` chains (issue 12): does a turn get slower with the chain's length?

Every turn reads the whole chain before it (each earlier response's input and output). This
builds one chain of ``--turns`` responses, one at a time (``POST /v1/responses``, not
streamed), against the scripted upstream in instant mode with a ``--reply-chars`` answer in
4-character chunks (so each response's event log holds that many deltas), and prints the
median latency of the turns at a few depths. A constant per-turn cost gives a flat table; a
cost that grows with the depth shows how much each earlier response adds. The prompt the
upstream receives grows with the depth too (that part is inherent: ``truncation: disabled``
sends the whole chain), so the upstream's own time is measured the same way, directly, with
a chat of the same length.

Run with the main venv: ``.venv/bin/python bench/bench_responses_chain.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import harness  # noqa: E402  (the e2e harness is not a package)

KEY = "sk-bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--reply-chars", type=int, default=400)
    parser.add_argument("--bucket", type=int, default=10, help="turns per reported depth")
    parser.add_argument("--reads", type=int, default=30, help="timed reads of the whole chain at the end")
    args = parser.parse_args()
    reply = ("lorem ipsum " * 1000)[: args.reply_chars]
    with tempfile.TemporaryDirectory(prefix="spindle-bench-") as tmp:
        root = Path(tmp)
        upstream = harness.start_upstream(root)
        try:
            upstream.script("chain:", [{"content": reply, "chunk_chars": 4}])
            with harness.start_server(upstream, root / "data", log_path=root / "spindle.log",
                                      env={"SPINDLE_API_KEYS": KEY}) as spindle:
                return run(args, upstream, spindle.base_url, reply)
        except harness.StartError as error:
            print(error, file=sys.stderr)
            return 1
        finally:
            upstream.stop()


def run(args: argparse.Namespace, upstream: harness.Upstream, base_url: str, reply: str) -> int:
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), f"({os.cpu_count()} cores)")
    spindle_ms: list[float] = []
    direct_ms: list[float] = []
    messages: list[dict[str, str]] = []
    previous = None
    with httpx.Client(timeout=120) as http:
        for turn in range(args.turns):
            prompt = f"chain: turn {turn}"
            body = {"model": "m", "input": prompt, **({"previous_response_id": previous} if previous else {})}
            start = time.perf_counter()
            answer = http.post(f"{base_url}/v1/responses", json=body, headers={"Authorization": f"Bearer {KEY}"})
            spindle_ms.append((time.perf_counter() - start) * 1000)
            answer.raise_for_status()
            assert answer.json()["status"] == "completed", answer.text
            previous = answer.json()["id"]
            messages.append({"role": "user", "content": prompt})
            start = time.perf_counter()
            direct = http.post(f"{upstream.base_url}/chat/completions", json={"model": "m", "messages": messages},
                               headers={"Authorization": f"Bearer {upstream.api_key}"})
            direct_ms.append((time.perf_counter() - start) * 1000)
            direct.raise_for_status()
            messages.append({"role": "assistant", "content": reply})
        # The chain read alone, without the upstream: input_tokens resolves the whole chain.
        reads: list[float] = []
        for _ in range(args.reads):
            start = time.perf_counter()
            counted = http.post(f"{base_url}/v1/responses/input_tokens", headers={"Authorization": f"Bearer {KEY}"},
                                json={"model": "m", "input": "count", "previous_response_id": previous})
            reads.append((time.perf_counter() - start) * 1000)
            counted.raise_for_status()
    print(f"{args.turns} turns in one chain, reply {args.reply_chars} chars ({args.reply_chars // 4} deltas each)")
    print(f"{'turns':<12}{'spindle p50 ms':>16}{'upstream p50 ms':>17}{'overhead ms':>13}")
    for first in range(0, args.turns, max(args.bucket, 1) * max(1, args.turns // (args.bucket * 5))):
        part = slice(first, min(first + args.bucket, args.turns))
        ours, theirs = statistics.median(spindle_ms[part]), statistics.median(direct_ms[part])
        print(f"{f'{part.start + 1}-{part.stop}':<12}{ours:>16.1f}{theirs:>17.1f}{ours - theirs:>13.1f}")
    print(f"reading the chain before turn {args.turns + 1} (POST /v1/responses/input_tokens, at most 256 "
          f"responses back), {args.reads} times: p50 {statistics.median(reads):.1f} ms, "
          f"min {min(reads):.1f} ms")
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
