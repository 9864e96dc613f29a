"""The seed doc's File Search snippets, run as written by each SDK venv against a real server.

A real ``spindle serve`` and the scripted upstream run as subprocesses (the e2e harness); the
snippets run under ``.venv-sdk140`` (openai 1.40, ``client.beta.vector_stores``) and
``.venv-sdk3`` (the current SDK). Skipped when those venvs are absent
(``scripts/make_sdk_venvs.sh`` creates them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.retrieval.docgen import make_pdf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import harness  # noqa: E402

SNIPPETS = Path(__file__).parent / "snippets" / "seed_file_search.py"


@pytest.mark.parametrize("venv", [".venv-sdk140", ".venv-sdk3"])
def test_seed_snippets_run_as_written(venv: str, tmp_path: Path) -> None:
    python = ROOT / venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{venv} not found (scripts/make_sdk_venvs.sh)")
    folder = tmp_path / "mydirectory"
    folder.mkdir()
    (folder / "myfile1.pdf").write_bytes(make_pdf([["Audited statements, Q3."],
                                                   ["Shares outstanding last quarter: 4,213,000."]]))
    (folder / "myfile2.txt").write_text("Revenue grew 12% year over year, driven by cloud services.")
    (folder / "myfile.pdf").write_bytes(make_pdf([["Board minutes: the dividend is 0.42 per share."]]))
    env = {"SPINDLE_SANDBOX_ENABLED": "false", "SPINDLE_RETRIEVAL_TOOL_REWRITE": "false"}
    upstream = harness.start_upstream(tmp_path)
    try:
        upstream.script("How many company shares", [
            {"tool_calls": [{"name": "file_search", "arguments": '{"queries": ["shares outstanding last quarter"]}'}]},
            {"content": "Jane Doe, 4,213,000 shares were outstanding {{marker:0}}."},
        ])
        with harness.start_server(upstream, tmp_path / "data", env=env) as server:
            run = subprocess.run(
                [str(python), str(SNIPPETS)], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                env=harness.child_env({"AZURE_OPENAI_ENDPOINT": server.base_url, "AZURE_OPENAI_API_KEY": "sk-x"}))
            assert run.returncode == 0, run.stderr[-3000:] + server.log_text()[-3000:]
    finally:
        upstream.stop()
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["batch"] == {"status": "completed", "completed": 2, "total": 2}
    assert len(out["thread_stores"]) == 1
    assert out["tool_calls"] == ["file_search"]
    assert out["answer"] == "Jane Doe, 4,213,000 shares were outstanding [0]."
    assert out["citations"] == ["[0] myfile1.pdf"]
    assert out["expires_after_days"] == 7
    assert out["file_status"] == "completed" and out["batch2_status"] == "completed"
    assert out["rebuilt_completed"] == 4 and out["rebuilt_attached"] == [out["rebuilt_id"]]
