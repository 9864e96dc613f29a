"""The hardening issue's attacks against a real ``spindle serve`` (not a timed test): the
model's hostile code through runs with code_interpreter (part A) and hostile documents
through vector store ingestion (part B), with the server's peak RSS after each.

    .venv/bin/python bench/bench_attacks_server.py [--only a1_flood,b_zip_bomb]

The scripted upstream (tests/upstream) plays the model: it calls ``python`` with the attack's
code. The figure is the server process's ``VmHWM`` (peak resident set, the kernel's own
accounting, from /proc/<pid>/status) — cumulative, so each row is the peak so far. Target:
under 1.5 GB throughout. The document attacks are generated here; the code attacks are
bench_attacks_sandbox.py's. The server uses its own cgroup parent, uid range and work dir.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402
from bench_attacks_sandbox import BIG_IN_CALL, FLOOD, INT_IMAGE, MANY_FILES, PLANT, REAL_PNG  # noqa: E402

TARGET_MB = 1536
HEADERS = {"Authorization": "Bearer sk-attack", "OpenAI-Beta": "assistants=v2"}
CODE_ATTACKS = {
    "a1_flood": FLOOD + "\nimport time\ntime.sleep(3)",
    "a1_big_in_call": BIG_IN_CALL,
    "a2_int_image": INT_IMAGE,
    "a2_200mb_png": REAL_PNG,
    "a3_plant": PLANT,
    "a4_many_files": MANY_FILES,
}


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def zip_bomb(kind: str) -> bytes:
    """A valid-looking docx/pptx whose main part expands to 4 GB of zeros."""
    part = "word/document.xml" if kind == "docx" else "ppt/slides/slide1.xml"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open(part, "w", force_zip64=True) as handle:
            block = b"\0" * (1 << 24)
            for _ in range(256):
                handle.write(block)
    return buffer.getvalue()


def page_tree_pdf(pages: int = 100_000) -> bytes:
    """A tiny PDF whose page tree names one page object 100,000 times."""
    kids = " ".join(["3 0 R"] * pages)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >>"]
    out = io.BytesIO(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


DOCUMENT_ATTACKS: dict[str, Callable[[], list[tuple[str, bytes]]]] = {
    "b_zip_bombs_x8": lambda: [(f"bomb{i}.{'docx' if i % 2 else 'pptx'}", zip_bomb("docx" if i % 2 else "pptx"))
                               for i in range(8)],
    "b_100mb_one_line_txt_x3": lambda: [(f"line{i}.txt", b"word " * (20 * 1024 * 1024)) for i in range(3)],
    "b_page_tree_pdf": lambda: [("tree.pdf", page_tree_pdf())],
}


class Attacker:
    def __init__(self, server: harness.SpindleServer, upstream: harness.Upstream) -> None:
        self.server, self.upstream = server, upstream
        self.http = httpx.Client(base_url=f"{server.base_url}/v1", headers=HEADERS, timeout=600)
        self.assistant = self.http.post("/assistants", json={"model": "m", "tools": [{"type": "code_interpreter"}]}).json()

    def code(self, name: str, source: str) -> str:
        word = f"attack {name}"
        self.upstream.script(word, [{"tool_calls": [{"name": "python", "arguments": json.dumps({"code": source})}]},
                                    {"content": "done"}])
        run = self.http.post("/threads/runs", json={"assistant_id": self.assistant["id"], "thread": {
            "messages": [{"role": "user", "content": word}]}}).json()
        deadline = time.monotonic() + 300
        while run["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
            time.sleep(0.2)
            run = self.http.get(f"/threads/{run['thread_id']}/runs/{run['id']}").json()
        return str(run["status"])

    def documents(self, files: list[tuple[str, bytes]]) -> str:
        ids = [self.http.post("/files", files={"file": (name, data)}, data={"purpose": "assistants"}).json()["id"]
               for name, data in files]
        store = self.http.post("/vector_stores", json={"name": "attack", "file_ids": ids}).json()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            counts = self.http.get(f"/vector_stores/{store['id']}").json()["file_counts"]
            if counts["in_progress"] == 0:
                return f"{counts['failed']} failed, {counts['completed']} completed"
            time.sleep(0.5)
        return "still ingesting after 600 s"

    def alive(self) -> bool:
        return self.http.get(f"{self.server.base_url}/healthz").status_code == 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated attack names")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), f"({os.cpu_count()} cores)")
    env = {"SPINDLE_SANDBOX_CGROUP_PARENT": "spindle-attack", "SPINDLE_SANDBOX_UID_BASE": "2090000000",
           "SPINDLE_SANDBOX_WORK_DIR": "/run/spindle-attack", "SPINDLE_SANDBOX_POOL_SIZE": "1"}
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="spindle-attack-") as tmp:
        root = Path(tmp)
        upstream = harness.start_upstream(root)
        server = harness.start_server(upstream, root / "data", env, log_path=root / "server.log")
        try:
            assert server.child is not None and server.child.process is not None
            pid = server.child.process.pid
            attacker = Attacker(server, upstream)
            rows.append(("(ready)", "", vm_hwm_mb(pid)))
            for name, source in CODE_ATTACKS.items():
                if not wanted or name in wanted:
                    outcome = attacker.code(name, source)
                    rows.append((name, f"run {outcome}; server {'up' if attacker.alive() else 'DOWN'}",
                                 vm_hwm_mb(pid)))
            for name, make in DOCUMENT_ATTACKS.items():
                if not wanted or name in wanted:
                    outcome = attacker.documents(make())
                    rows.append((name, f"{outcome}; server {'up' if attacker.alive() else 'DOWN'}", vm_hwm_mb(pid)))
        finally:
            server.stop()
            upstream.stop()
    print("| attack | outcome | server VmHWM so far (MiB) | under 1.5 GB |\n|---|---|---|---|")
    for name, outcome, peak in rows:
        print(f"| {name} | {outcome} | {peak:.0f} | {'yes' if peak < TARGET_MB else 'NO'} |")
    return 0 if all(peak < TARGET_MB for _, _, peak in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
