"""The server's memory under File Search's document attacks (issue 7, part B).

Starts a real server process (``tests/e2e/harness.py``, the sandbox off), uploads the hostile
files of ``tests/retrieval/hostile.py`` and attaches each group of them to a vector store at
once, so they are ingested concurrently (``ingest_concurrency`` is 16). Before each group the
server's peak RSS is reset (``/proc/PID/clear_refs``, 5) and after it ``VmHWM`` is read from
``/proc/PID/status`` - the kernel's own accounting of the server process. The parser
processes are sampled every 0.1 s (their own limits keep them bounded; they are not the
server). Target: the server's peak stays under 1.5 GB in every row.

    python bench/bench_attacks_documents.py [--quick]

Not a timed test: it prints a table. ``--quick`` uses smaller bombs (1 GB instead of 2 GB
expanded; 50 MB texts instead of 100 MB).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from tests.e2e.harness import start_server  # noqa: E402
from tests.retrieval.hostile import one_line_text, pdf_page_tree_bomb, zip_bomb  # noqa: E402
from tests.retrieval.test_parsers import sample_file  # noqa: E402

TARGET_MB = 1536


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def parser_pids(server_pid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == server_pid and b"parsers.worker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return pids


class Sampler:
    """Largest RSS of any one parser process, and of all of them together, while running."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.one = self.all = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = []
            for pid in parser_pids(self.server_pid):
                try:
                    sizes.append(status_kb(pid, "VmRSS"))
                except OSError:
                    continue
            if sizes:
                self.one, self.all = max(self.one, max(sizes)), max(self.all, sum(sizes))
            time.sleep(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def upload(client: openai.OpenAI, name: str, data: bytes) -> str:
    buffer = io.BytesIO(data)
    buffer.name = name
    return client.files.create(file=buffer, purpose="assistants").id


def attacks(quick: bool) -> list[tuple[str, list[tuple[str, Callable[[], bytes]]]]]:
    bomb = (1 << 30) if quick else (2 << 30)
    text = (50 << 20) if quick else (100 << 20)
    docx = [(f"bomb{i}.docx", lambda: zip_bomb("docx", bomb)) for i in range(4)]
    pptx = [(f"bomb{i}.pptx", lambda: zip_bomb("pptx", bomb)) for i in range(4)]
    liars = [(f"liar{i}.docx", lambda: zip_bomb("docx", bomb // 2, declared=4096)) for i in range(2)]
    texts = [(f"oneline{i}.txt", lambda: one_line_text(text)) for i in range(3)]
    pdfs = [(f"pages{i}.pdf", pdf_page_tree_bomb) for i in range(3)]
    return [
        ("docx/pptx zip bombs (8)", docx + pptx),
        ("zip bombs lying about their size (2)", liars),
        (f"{text >> 20} MB one-line .txt (3)", texts),
        ("100,000-page PDF page trees (3)", pdfs),
        ("all of them at once (16)", docx + pptx + liars + texts + pdfs),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spindle-bench-attacks-"))
    env = {
        "SPINDLE_SANDBOX_ENABLED": "false",
        "SPINDLE_SANDBOX_CGROUP_PARENT": os.environ.get("SPINDLE_SANDBOX_CGROUP_PARENT", "spindle-bench"),
        "SPINDLE_SANDBOX_UID_BASE": os.environ.get("SPINDLE_SANDBOX_UID_BASE", "2040000000"),
        "SPINDLE_SANDBOX_WORK_DIR": os.environ.get("SPINDLE_SANDBOX_WORK_DIR", str(work / "sandbox")),
        "HF_HUB_OFFLINE": "1",
    }
    server = start_server(None, work / "data", env=env)
    assert server.child is not None and server.child.process is not None
    pid = server.child.process.pid
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="sk-bench", max_retries=0, timeout=600)
    rows = []
    try:
        store = client.vector_stores.create(name="attacked").id
        warm = client.vector_stores.files.create_and_poll(
            vector_store_id=store, file_id=upload(client, "warm.pdf", sample_file("pdf")))
        assert warm.status == "completed", warm.last_error
        idle_mb = status_kb(pid, "VmRSS") / 1024
        for title, files in attacks(args.quick):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            ids = {}
            for name, make in files:
                data = make()
                ids[upload(client, name, data)] = name
                del data
            upload_peak = status_kb(pid, "VmHWM") / 1024
            good = upload(client, "good.txt", b"The ferry to the island leaves at noon every day.")
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            started = time.monotonic()
            with Sampler(pid) as sampler:
                batch = client.vector_stores.file_batches.create(vector_store_id=store, file_ids=[*ids, good])
                while client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store).status == "in_progress":
                    time.sleep(0.2)
            elapsed = time.monotonic() - started
            peak = status_kb(pid, "VmHWM") / 1024
            listed = {f.id: f for f in client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store)}
            failed = sum(1 for i in ids if listed[i].status == "failed" and listed[i].last_error.code == "invalid_file")
            reasons = sorted({listed[i].last_error.message.split(";")[0][:70] for i in ids if listed[i].last_error})
            rows.append((title, upload_peak, peak, sampler.one / 1024, sampler.all / 1024, elapsed,
                         f"{failed}/{len(ids)}", listed[good].status, reasons))
            assert server.alive, "the server died"
    finally:
        server.stop()
    print(f"# server idle RSS after warm-up: {idle_mb:.0f} MB; target: server peak < {TARGET_MB} MB; "
          f"{os.cpu_count()} CPUs")
    print("| attack (files ingested at once) | server peak RSS, upload | server peak RSS, ingestion | "
          "largest parser process | all parser processes | wall | invalid_file | good file next to them |")
    print("|---|---|---|---|---|---|---|---|")
    for title, up, peak, one, every, elapsed, failed, good_status, _ in rows:
        print(f"| {title} | {up:,.0f} MB | {peak:,.0f} MB | {one:,.0f} MB | {every:,.0f} MB | {elapsed:.1f} s | "
              f"{failed} | {good_status} |")
    print()
    for title, *_, reasons in rows:
        print(f"- {title}: " + " / ".join(reasons))
    worst = max(row[2] for row in rows)
    print(f"\nworst server peak during ingestion: {worst:,.0f} MB ({'under' if worst < TARGET_MB else 'OVER'} target)")


if __name__ == "__main__":
    main()
