"""Hostile and mislabelled documents against File Search ingestion (issue 7, part B).

Every attack goes through the public API (the SDK on the in-process app, as
``tests.retrieval.test_api`` does), with files generated here (``tests.retrieval.hostile``).
The in-process app *is* this process, so "the server's memory" is measured here: the peak RSS
(``VmHWM``) is reset through ``/proc/self/clear_refs`` just before the attack and read after.
"""

from __future__ import annotations

import codecs
import io
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from tests.retrieval.conftest import embedder, make_app, settings, upload, upstream  # noqa: F401
from tests.retrieval.hostile import one_line_text, pdf_page_tree_bomb, zip_bomb
from tests.retrieval.test_parsers import sample_file

# What ingesting an attack may add to the server's peak RSS (today: +2 to +4 GB per file).
MAX_RISE_MB = 300


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def _reset_peak() -> int:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5); returns it in kB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmHWM")


def _rise_mb(base_kb: int) -> float:
    return (_status_kb("VmHWM") - base_kb) / 1024


def _client(make_app: Callable[..., TestClient]) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url="http://testserver/v1", api_key="sk-test", http_client=make_app(),
                         max_retries=0)


def _warm_store(client: openai.OpenAI) -> str:
    """A store with one file ingested, so the index, the parser processes and the embedder are
    already up when the peak is reset."""
    vs = client.vector_stores.create(name="attacked")
    warm = client.vector_stores.files.create_and_poll(
        vector_store_id=vs.id, file_id=upload(client, "warm.txt", b"The lighthouse keeper logs every ship."))
    assert warm.status == "completed"
    return vs.id


def _attach_all(client: openai.OpenAI, store_id: str, file_ids: list[str], timeout_s: float = 90.0) -> dict:
    """Attach files at once (ingested concurrently) and wait; ``{file_id: vector store file}``."""
    batch = client.vector_stores.file_batches.create(vector_store_id=store_id, file_ids=file_ids)
    deadline = time.monotonic() + timeout_s
    while client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store_id).status == "in_progress":
        assert time.monotonic() < deadline, "ingestion did not finish"
        time.sleep(0.1)
    return {f.id: f for f in client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store_id)}


def _stream(name: str, data: bytes) -> io.BytesIO:
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


# -- item 8: parse in a separate process, with limits ------------------------------------------


def test_zip_bombs_fail_without_growing_the_server(make_app: Callable[..., TestClient]) -> None:  # noqa: F811
    client = _client(make_app)
    store = _warm_store(client)
    bombs = [upload(client, "bomb.docx", zip_bomb("docx", 768 << 20)),
             upload(client, "bomb.pptx", zip_bomb("pptx", 768 << 20)),
             # its directory claims 4 KB: only expanding it shows what it is
             upload(client, "liar.docx", zip_bomb("docx", 768 << 20, declared=4096))]
    good = upload(client, "good.docx", sample_file("docx", "the cellar holds forty barrels of cider"))
    base = _reset_peak()
    files = _attach_all(client, store, bombs + [good])
    rise = _rise_mb(base)
    assert rise < MAX_RISE_MB, f"server peak RSS rose {rise:.0f} MB"
    assert files[good].status == "completed"
    for bomb in bombs:
        assert files[bomb].status == "failed" and files[bomb].last_error.code == "invalid_file"
        message = files[bomb].last_error.message
        assert "expand" in message or "zip bomb" in message or "size" in message, message
    hit = client.vector_stores.search(store, query="barrels of cider")
    assert hit.data and "forty barrels" in hit.data[0].content[0].text


def test_a_huge_one_line_text_is_refused_before_it_is_tokenized(make_app: Callable[..., TestClient]) -> None:  # noqa: F811,E501
    client = _client(make_app)
    store = _warm_store(client)
    huge = upload(client, "huge.txt", one_line_text(100 << 20))
    base = _reset_peak()
    files = _attach_all(client, store, [huge])
    rise = _rise_mb(base)
    assert rise < MAX_RISE_MB, f"server peak RSS rose {rise:.0f} MB"
    error = files[huge].last_error
    assert files[huge].status == "failed" and error.code == "invalid_file"
    assert "characters" in error.message or "tokens" in error.message, error.message


def test_a_pdf_page_tree_bomb_is_stopped_quickly_outside_the_server(make_app: Callable[..., TestClient],  # noqa: F811
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINDLE_RETRIEVAL_PARSE_TIMEOUT_S", "3")
    client = _client(make_app)
    store = _warm_store(client)
    bomb_bytes = pdf_page_tree_bomb()
    assert len(bomb_bytes) < 2048  # ~1.3-1.9 KB for 100,000 pages
    bomb = upload(client, "pages.pdf", bomb_bytes)
    good = upload(client, "report.pdf", sample_file("pdf", "the glacier camp drills ice cores at dawn"))
    base = _reset_peak()
    started = time.monotonic()
    files = _attach_all(client, store, [bomb, good])
    elapsed = time.monotonic() - started
    rise = _rise_mb(base)
    assert rise < MAX_RISE_MB, f"server peak RSS rose {rise:.0f} MB"
    assert elapsed < 30, f"took {elapsed:.0f} s"
    assert files[good].status == "completed"
    assert files[bomb].status == "failed" and files[bomb].last_error.code == "invalid_file"
    message = files[bomb].last_error.message
    assert "longer than 3 s" in message or "page-tree bomb" in message, message  # the time or the size limit


def test_a_file_needing_more_memory_than_the_parser_may_use_fails_alone(
        make_app: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("SPINDLE_RETRIEVAL_PARSE_MEMORY_MB", "64")
    monkeypatch.setenv("SPINDLE_RETRIEVAL_PARSE_WORKERS", "1")  # the same process must recover for the next
    client = _client(make_app)
    store = _warm_store(client)
    big = upload(client, "big.txt", one_line_text(30 << 20))
    files = _attach_all(client, store, [big])
    error = files[big].last_error
    assert files[big].status == "failed" and error.code == "invalid_file"
    assert "memory" in error.message or "crashed" in error.message, error.message
    after = client.vector_stores.files.create_and_poll(
        vector_store_id=store, file_id=upload(client, "after.md", b"# Notes\n\nThe ferry leaves at noon."))
    assert after.status == "completed"


# -- item 9: content that is not text of the claimed kind; encodings; .go -----------------------


def test_mislabelled_and_mis_encoded_files(make_app: Callable[..., TestClient]) -> None:  # noqa: F811
    client = _client(make_app)
    store = client.vector_stores.create(name="mislabelled").id
    body = "The harbour office opens at eight and closes at noon on Sundays.\n" * 4
    western = ("<html><head><title>Carta</title></head><body><p>Le café est très bon.</p>"
               "<p>El niño come una piña en la montaña.</p></body></html>")
    uploads = {
        "utf16-bom-says-le.txt": codecs.BOM_UTF16_LE + body.encode("utf-16-be"),
        "utf16-bom-says-be.txt": codecs.BOM_UTF16_BE + body.encode("utf-16-le"),
        "actually-a-pdf.md": sample_file("pdf", "the glacier camp drills ice cores"),
        "menu.html": western.encode("cp1252"),
        "server.go": b'package main\n\n// The gopher guards the gateway.\nfunc main() {}\n',
    }
    ids = {name: upload(client, name, data) for name, data in uploads.items()}
    files = _attach_all(client, store, list(ids.values()))
    by_name = {name: files[file_id] for name, file_id in ids.items()}
    for name in ("utf16-bom-says-le.txt", "utf16-bom-says-be.txt", "actually-a-pdf.md"):
        assert by_name[name].status == "failed", name
        assert by_name[name].last_error.code == "invalid_file", name
    assert "byte-order mark" in by_name["utf16-bom-says-le.txt"].last_error.message
    assert "PDF" in by_name["actually-a-pdf.md"].last_error.message
    assert by_name["menu.html"].status == "completed"
    text = "".join(part.text for part in client.vector_stores.files.content(
        file_id=ids["menu.html"], vector_store_id=store))
    assert "très" in text and "niño" in text and "piña" in text, text
    assert by_name["server.go"].status == "completed"
    hit = client.vector_stores.search(store, query="gopher gateway")
    assert hit.data and hit.data[0].filename == "server.go"
