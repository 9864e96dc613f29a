"""Code Interpreter in responses vs in Assistants runs: time to a completed answer with one
code call, one request at a time, in the same rotation (so both see the same load).

A response runs its call in a container (``tools: [{"type": "code_interpreter", "container":
<id>}]``); a run runs it in its thread's session. Both use the same sandbox pool, so the
difference is what the container costs (its rows, the copy-in check, the files sync after the
call). The scripted upstream answers instantly. Needs a working sandbox (SPINDLE_SANDBOX_*).

Run with the main venv: ``.venv/bin/python bench/bench_responses_code.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import harness  # noqa: E402  (the e2e harness is not a package)
from bench_runs import _pct  # noqa: E402

CODE = "x = sum(range(1000))\nprint(x)\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spindle-bench-") as tmp:
        root = Path(tmp)
        upstream = harness.start_upstream(root)
        try:
            with harness.start_server(upstream, root / "data", log_path=root / "spindle.log") as spindle:
                return run(args, upstream, spindle)
        finally:
            upstream.stop()


def _script(upstream: harness.Upstream, prompt: str) -> None:
    # A rule's replies are consumed in order, so each request gets its own rule (the call, then the answer).
    upstream.script(prompt, [{"tool_calls": [{"name": "python", "arguments": json.dumps({"code": CODE})}]},
                             {"content": "499500"}])


def run(args: argparse.Namespace, upstream: harness.Upstream, spindle: harness.SpindleServer) -> int:
    client = openai.OpenAI(base_url=f"{spindle.base_url}/v1", api_key="sk-test", max_retries=0)
    container = client.containers.create(name="bench")
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create()
    tools = [{"type": "code_interpreter", "container": container.id}]
    times: dict[str, list[float]] = {"response": [], "run": []}
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), f"({os.cpu_count()} cores)")
    for i in range(args.warmup + args.iterations):
        _script(upstream, f"bench code r{i:05d}x")
        start = time.perf_counter()
        response = client.responses.create(model="m", input=f"bench code r{i:05d}x", tools=tools)  # type: ignore[arg-type]
        elapsed_response = time.perf_counter() - start
        assert response.status == "completed" and response.output[0].type == "code_interpreter_call", response
        _script(upstream, f"bench code t{i:05d}x")
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content=f"bench code t{i:05d}x")
        start = time.perf_counter()
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                       poll_interval_ms=10)
        elapsed_run = time.perf_counter() - start
        assert run.status == "completed", run.last_error
        if i >= args.warmup:
            times["response"].append(elapsed_response * 1000)
            times["run"].append(elapsed_run * 1000)
    print(f"{args.iterations} of each after {args.warmup} warm-up; load average after: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'mode':<10}{'p50 ms':>10}{'p99 ms':>10}")
    for mode, values in times.items():
        print(f"{mode:<10}{_pct(values, 50):>10.1f}{_pct(values, 99):>10.1f}")
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
