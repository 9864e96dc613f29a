"""Hostile HTTP bodies, query strings and connections, and subsystems that fail to start.

In-process (the real app with the scripted upstream, ``tests.unit.conftest``): invalid
Unicode, absurd JSON, documented field limits, the body cap, a vector store service that
cannot start. Against a real ``spindle serve`` process (``tests/e2e/harness.py``): slow
connections, a 100 MB body, an upload dropped halfway: the things only a socket shows.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from tests.e2e.harness import SpindleServer
from tests.unit import conftest as unit_tier
from tests.upstream.server import UpstreamHandle

# The in-process tier's fixtures (the real app, the SDK on it, the scripted upstream).
upstream, _fresh_script, make_app = unit_tier.upstream, unit_tier._fresh_script, unit_tier.make_app
http, client = unit_tier.http, unit_tier.client

JSON = {"content-type": "application/json"}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]  # type: ignore[no-any-return]


def post_raw(http: TestClient, path: str, raw: str | bytes) -> httpx.Response:
    """``raw`` goes on the wire as written: ``"\\ud800"`` stays a JSON escape, as a client sends it."""
    return http.post(path, content=raw.encode() if isinstance(raw, str) else raw, headers=JSON)


# -- 10. invalid Unicode -------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "raw", "param"), [
    ("/v1/vector_stores", r'{"name": "\ud800"}', "name"),
    ("/v1/threads", r'{"metadata": {"k": "ok \udc00"}}', "metadata.k"),
    ("/v1/threads", r'{"metadata": {"\ud800": "v"}}', "metadata"),
    ("/v1/threads", r'{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "\ud83d"}]}',
     "messages[1].content"),
    ("/v1/assistants", r'{"model": "m", "description": "x\ude00y"}', "description"),
    ("/v1/assistants", r'{"model": "m", "tools": [{"type": "function", "function": {"name": "f", '
                       r'"parameters": {"type": "object", "description": "\udfff"}}}]}',
     "tools[0].function.parameters.description"),
    ("/v1/threads/runs", r'{"assistant_id": "asst_x", "thread": {"messages": [{"role": "user", "content": '
                         r'[{"type": "text", "text": "\ud800"}]}]}}', "thread.messages[0].content[0].text"),
])
def test_lone_surrogates_are_rejected_naming_the_parameter(http: TestClient, path: str, raw: str,
                                                            param: str) -> None:
    error = error_of(post_raw(http, path, raw), 400)
    assert error["param"] == param and error["code"] == "invalid_unicode", error
    # Nothing was stored, and every list still answers.
    for listing in ("/v1/vector_stores", "/v1/assistants"):
        response = http.get(listing)
        assert response.status_code == 200 and response.json()["data"] == [], response.text


def test_lone_surrogate_in_message_text_and_metadata(http: TestClient, client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    url = f"/v1/threads/{thread.id}/messages"
    assert error_of(post_raw(http, url, r'{"role": "user", "content": "a\ud800b"}'), 400)["param"] == "content"
    assert error_of(post_raw(http, url, r'{"role": "user", "content": "ok", "metadata": {"k": "\ud800"}}'),
                    400)["param"] == "metadata.k"
    assert error_of(post_raw(http, f"/v1/threads/{thread.id}", r'{"metadata": {"k": "\ud800"}}'),
                    400)["param"] == "metadata.k"
    assert http.get(url).json()["data"] == []
    assert client.beta.threads.retrieve(thread.id).metadata == {}


def test_query_parameters_must_be_valid_utf8(http: TestClient) -> None:
    # %ED%A0%80 is U+D800 encoded as if it were a character: not UTF-8.
    error = error_of(http.get("/v1/assistants?limit=10&after=%ED%A0%80"), 400)
    assert error["param"] == "after" and error["code"] == "invalid_unicode"
    assert http.get("/v1/assistants?after=").status_code == 200


def test_a_stored_lone_surrogate_cannot_break_a_list(http: TestClient, client: openai.OpenAI,
                                                     upstream: UpstreamHandle) -> None:
    # The upstream model is not the client: its JSON may carry a lone surrogate escape, which
    # is stored as it came. Reading it back must still work, list and retrieve alike.
    upstream.script("echo broken", [{"content": "before \ud800 after", "chunk_chars": 100}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "echo broken"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "completed", run.last_error
    listed = http.get(f"/v1/threads/{thread.id}/messages?order=asc")
    assert listed.status_code == 200, listed.text
    reply = listed.json()["data"][1]
    assert reply["content"][0]["text"]["value"] == "before \ufffd after"
    again = http.get(f"/v1/threads/{thread.id}/messages/{reply['id']}")
    assert again.status_code == 200 and again.json()["content"] == reply["content"]


def test_a_vector_store_stored_before_the_check_can_still_be_listed_read_and_deleted(http: TestClient) -> None:
    # What the issue found: a store named "\ud800" made the project's whole list a 500, with no
    # id to delete it by. Such a row, stored before the edge check existed, is put in through
    # the service (the edge now refuses it).
    service = http.app.state.runtime.extensions["vector_stores"]  # type: ignore[attr-defined]
    portal = http.portal
    assert portal is not None
    stored = portal.call(lambda: service.create_store("default", name="bad \ud800", file_ids=[], metadata=None,
                                                      expires_after=None, chunking_strategy=None))
    listed = http.get("/v1/vector_stores")
    assert listed.status_code == 200, listed.text
    assert [vs["name"] for vs in listed.json()["data"]] == ["bad \ufffd"]
    assert http.get(f"/v1/vector_stores/{stored['id']}").status_code == 200
    assert http.delete(f"/v1/vector_stores/{stored['id']}").json()["deleted"] is True
    assert http.get("/v1/vector_stores").json()["data"] == []


# -- 11. absurd JSON and documented limits -------------------------------------------------------

def test_json_nested_100000_levels_is_a_400(http: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    error = error_of(post_raw(http, "/v1/assistants", '{"model": "m", "metadata": ' + deep + "}"), 400)
    assert "nested too deeply" in error["message"]
    assert http.get("/v1/assistants").json()["data"] == []


def test_json_nested_past_the_depth_limit_names_the_parameter(http: TestClient) -> None:
    schema = "1"
    for _ in range(150):
        schema = '{"a": ' + schema + "}"
    raw = '{"model": "m", "tools": [{"type": "function", "function": {"name": "f", "parameters": ' + schema + "}}]}"
    error = error_of(post_raw(http, "/v1/assistants", raw), 400)
    assert error["param"].startswith("tools[0].function.parameters.a.a."), error
    assert "nested too deeply" in error["message"]


def test_a_body_of_millions_of_tiny_values_is_refused_before_parsing(http: TestClient) -> None:
    # 4 MB of "{}," would be 1.3 million dicts (~100 MB of Python objects) once parsed.
    raw = '{"model": "m", "metadata": {}, "tools": [' + ",".join(["{}"] * 1_300_000) + "]}"
    error = error_of(post_raw(http, "/v1/assistants", raw), 400)
    assert "too many keys and values" in error["message"] and error["code"] == "invalid_json"
    # Separators inside strings are text, not values: a pasted document is fine.
    pasted = json.dumps([{"k": i, "v": [i, i]} for i in range(20_000)])[:250_000]
    thread = http.post("/v1/threads", json={"messages": [{"role": "user", "content": pasted}] * 8})
    assert thread.status_code == 200, thread.text[:300]


@pytest.mark.parametrize(("raw", "param"), [
    ('{"model": "m", "temperature": ' + "1" * 5000 + "}", "temperature"),
    ('{"model": "m", "metadata": {"k": "v"}, "top_p": -' + "9" * 5000 + "}", "top_p"),
    ('{"model": "m", "temperature": NaN}', "temperature"),
    ('{"model": "m", "temperature": 1e999}', "temperature"),
])
def test_absurd_numbers_are_a_400_naming_the_parameter(http: TestClient, raw: str, param: str) -> None:
    error = error_of(post_raw(http, "/v1/assistants", raw), 400)
    assert error["param"] == param, error
    assert http.get("/v1/assistants").json()["data"] == []


def test_message_content_is_limited_to_256000_characters(http: TestClient, client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    url = f"/v1/threads/{thread.id}/messages"
    error = error_of(http.post(url, json={"role": "user", "content": "x" * 256_001}), 400)
    assert error["param"] == "content" and error["code"] == "string_above_max_length"
    assert "maximum length 256000" in error["message"] and "length 256001" in error["message"]
    # Text parts count together: one message, one limit.
    parts = [{"type": "text", "text": "x" * 200_000}, {"type": "text", "text": "y" * 56_001}]
    assert error_of(http.post(url, json={"role": "user", "content": parts}), 400)["param"] == "content[1].text"
    assert http.post(url, json={"role": "user", "content": "x" * 256_000}).status_code == 200
    azure = f"/openai/deployments/d/threads/{thread.id}/messages?api-version=2024-05-01-preview"
    assert error_of(http.post(azure, json={"role": "user", "content": "x" * 256_001}), 400)["param"] == "content"

    too_long = {"role": "user", "content": "z" * 256_001}
    assert error_of(http.post("/v1/threads", json={"messages": [{"role": "user", "content": "ok"}, too_long]}),
                    400)["param"] == "messages[1].content"
    assistant = client.beta.assistants.create(model="m")
    assert error_of(http.post(f"/v1/threads/{thread.id}/runs", json={
        "assistant_id": assistant.id, "additional_messages": [too_long]}), 400)["param"] == "additional_messages[0].content"
    assert error_of(http.post("/v1/threads/runs", json={"assistant_id": assistant.id, "thread": {
        "messages": [too_long]}}), 400)["param"] == "thread.messages[0].content"
    assert len(http.get(url).json()["data"]) == 1  # only the message at the limit
    assert http.get(f"/v1/threads/{thread.id}/runs").json()["data"] == []


@pytest.mark.parametrize(("body", "param"), [
    ({"name": "n" * 257}, "name"),
    ({"description": "d" * 513}, "description"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 513}}, "metadata"),
])
def test_vector_store_fields_are_limited(http: TestClient, body: dict[str, Any], param: str) -> None:
    assert error_of(http.post("/v1/vector_stores", json=body), 400)["param"] == param
    assert http.get("/v1/vector_stores").json()["data"] == []


@pytest.mark.parametrize("where", ["thread", "message", "run"])
def test_metadata_limits_everywhere(http: TestClient, client: openai.OpenAI, where: str) -> None:
    thread = client.beta.threads.create()
    assistant = client.beta.assistants.create(model="m")
    url, base = {
        "thread": ("/v1/threads", {}),
        "message": (f"/v1/threads/{thread.id}/messages", {"role": "user", "content": "x"}),
        "run": (f"/v1/threads/{thread.id}/runs", {"assistant_id": assistant.id}),
    }[where]
    for metadata in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        assert error_of(http.post(url, json={**base, "metadata": metadata}), 400)["param"] == "metadata"


def test_json_body_over_the_cap_is_refused_while_it_is_read(make_app: Any) -> None:
    http = make_app(max_json_body_bytes=1024 * 1024)
    sent = 0

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        nonlocal sent
        yield b'{"model": "m", "instructions": "'
        for _ in range(100):
            sent += 1 << 20
            yield b"x" * (1 << 20)
        yield b'"}'

    error = error_of(http.post("/v1/assistants", content=body(), headers=JSON), 413)
    assert error["code"] == "request_too_large" and "1 MB" in error["message"]
    declared = http.post("/v1/assistants", content=b"{}", headers={**JSON, "content-length": str(50 << 20)})
    assert error_of(declared, 413)["code"] == "request_too_large"
    assert http.post("/v1/assistants", json={"model": "m", "instructions": "x" * 200_000}).status_code == 200


# -- 18. a subsystem that fails to start ---------------------------------------------------------

def test_vector_stores_that_fail_to_start_answer_503_and_log_a_traceback(
        make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A real failure from a real setting: the tokenizer vocabulary is not where it is said to be.
    monkeypatch.setenv("SPINDLE_RETRIEVAL_VOCAB_DIR", str(tmp_path / "no-vocabulary-here"))
    with caplog.at_level(logging.ERROR):
        http = make_app()
    failures = [r for r in caplog.records if r.name == "spindle.app" and "vector stores" in r.getMessage()]
    assert failures and failures[0].exc_info is not None, [r.getMessage() for r in caplog.records]

    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="sk-test", http_client=http, max_retries=0)
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.vector_stores.list()
    assert raised.value.status_code == 503
    for response in (http.get("/v1/vector_stores"), http.post("/v1/vector_stores", json={"name": "n"}),
                     http.get("/v1/vector_stores/vs_x/files")):
        error = error_of(response, 503)
        assert error["type"] == "server_error" and error["code"] == "service_unavailable"
        assert "failed to start" in error["message"]
    # The rest of the server works.
    assert http.post("/v1/assistants", json={"model": "m"}).status_code == 200


def test_a_failed_subsystem_still_checks_the_key_first(make_app: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINDLE_RETRIEVAL_VOCAB_DIR", str(tmp_path / "missing"))
    http = make_app(api_keys="k1:p1")
    assert error_of(http.get("/v1/vector_stores"), 401)["code"] == "missing_api_key"
    assert error_of(http.get("/v1/vector_stores", headers={"authorization": "Bearer k1"}), 503)


@pytest.mark.parametrize("stage", ["build", "start"])
def test_a_tool_that_fails_to_start_is_logged_with_its_traceback(
        make_app: Any, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        stage: str) -> None:
    # Our own bug, injected: the tool's factory or its start raises.
    from spindle.tools import code_interpreter

    def broken(*_args: Any) -> Any:
        raise TypeError("injected failure")

    if stage == "build":
        monkeypatch.setattr(code_interpreter, "build", broken)
    else:
        monkeypatch.setattr(code_interpreter.CodeInterpreterTool, "start", broken)
    with caplog.at_level(logging.ERROR):
        http = make_app()
    failures = [r for r in caplog.records if "code_interpreter" in r.getMessage() and r.levelno >= logging.ERROR]
    assert failures and failures[0].exc_info is not None, [r.getMessage() for r in caplog.records]
    assert "TypeError: injected failure" in http.get("/healthz").json()["tool_problems"]["code_interpreter"]
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="sk-test", http_client=http, max_retries=0)
    assistant = sdk.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "compute"}])
    run = sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "failed" and run.last_error is not None and run.last_error.code == "server_error"
    assert "unavailable" in run.last_error.message


# -- 12. connections against the real server process ---------------------------------------------

HEADER_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpindleServer]:
    root = tmp_path_factory.mktemp("http-server")
    env = {"SPINDLE_SANDBOX_ENABLED": "false", "SPINDLE_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "SPINDLE_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "SPINDLE_HTTP_MAX_CONNECTIONS": "400",
           "SPINDLE_MAX_JSON_BODY_BYTES": str(4 << 20), "SPINDLE_MAX_UPLOAD_BYTES": str(8 << 20)}
    with SpindleServer(root / "data", upstream=None, env=env, log_path=root / "spindle.log") as running:
        running.start()
        yield running


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def _rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_slow_headers_are_closed_while_normal_requests_go_on(server: SpindleServer) -> None:
    count = 200  # bounded, loopback only; each socket is closed at the end whatever happens
    slow: list[socket.socket] = []
    first_opened = time.monotonic()
    try:
        for _ in range(count):
            sock = _connect(server.port)
            sock.send(b"GET /v1/assistants HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(sock)
        # A trickle of header bytes does not buy time: the deadline is for the whole header block.
        answered = 0
        while time.monotonic() - first_opened < HEADER_TIMEOUT_S / 2:
            for sock in slow:
                try:
                    sock.send(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            response = httpx.get(server.base_url + "/v1/assistants", headers={"authorization": "Bearer k"}, timeout=5)
            assert response.status_code == 200, response.text
            answered += 1
            time.sleep(0.2)
        assert answered >= 3
        # Before the deadline they are all still open (closed by the timeout, not at once) ...
        assert not any(_closed_by_server(s) for s in slow)
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 5
        open_ = list(slow)
        while open_ and time.monotonic() < deadline:
            open_ = [s for s in open_ if not _closed_by_server(s)]
            time.sleep(0.1)
        # ... and after it, none is.
        assert not open_, f"{len(open_)} of {count} slow connections still open after the header timeout"
        assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200
    finally:
        for sock in slow:
            sock.close()


def test_a_stalled_body_is_closed_after_the_body_timeout(server: SpindleServer) -> None:
    sock = _connect(server.port)
    try:
        sock.send(b"POST /v1/assistants HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                  b"content-length: 1000\r\n\r\n{\"model\": ")
        started = time.monotonic()
        while not _closed_by_server(sock) and time.monotonic() - started < BODY_TIMEOUT_S + 5:
            time.sleep(0.1)
        waited = time.monotonic() - started
        assert BODY_TIMEOUT_S * 0.9 <= waited < BODY_TIMEOUT_S + 5, waited
    finally:
        sock.close()


def test_at_the_connection_limit_the_oldest_slow_connection_makes_room(server: SpindleServer) -> None:
    slow: list[socket.socket] = []
    try:
        for _ in range(400):  # the server's limit: every slot held by a connection without headers
            sock = _connect(server.port)
            sock.send(b"GET / HTTP/1.1\r\n")
            slow.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        response = httpx.get(server.base_url + "/v1/assistants", timeout=5)
        assert response.status_code == 200 and time.monotonic() - started < HEADER_TIMEOUT_S, response.text
        time.sleep(0.2)
        assert _closed_by_server(slow[0])  # the oldest made room
    finally:
        for sock in slow:
            sock.close()


def test_oversized_header_block_is_refused(server: SpindleServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(b"GET /v1/assistants HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(100):
                sock.sendall(b"X-Big: " + b"a" * 1000 + b"\r\n")
        except OSError:
            pass  # closed by the server while we were still sending: what is tested
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    finally:
        sock.close()


def test_a_100_mb_json_body_is_refused_without_buffering_it(server: SpindleServer) -> None:
    assert server.child is not None and server.child.process is not None
    pid = server.child.process.pid
    before = _rss_peak_kb(pid)
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"model": "m", "instructions": "'
        for _ in range(100):
            sent += 1 << 20
            yield b"x" * (1 << 20)
        yield b'"}'

    try:
        response = httpx.post(server.base_url + "/v1/assistants", content=body(), headers=JSON, timeout=30)
        assert error_of(response, 413)["code"] == "request_too_large"
    except httpx.TransportError:
        pass  # the server answered and closed while the body was still being sent
    grown_mb = (_rss_peak_kb(pid) - before) / 1024
    assert grown_mb < 40, f"peak RSS grew {grown_mb:.0f} MB for a body capped at 4 MB"
    assert sent < 100 << 20, "the whole body was read"
    assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200


def test_large_bodies_held_at_once_are_bounded_together(server: SpindleServer) -> None:
    # The server's JSON limit is 4 MiB, so 8 x 4 MiB may be in flight; each socket sends 3.9 MB
    # of a 4 MB body and stalls. The one whose bytes cross the budget is answered 503 instead of
    # growing the server further (which one depends on the order the server reads them in).
    held: list[socket.socket] = []
    piece = b'{"model": "m", "instructions": "' + b"x" * (3_900_000 - 32)
    try:
        for _ in range(9):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"POST /v1/assistants HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: 4000000\r\n\r\n" + piece)
            sock.setblocking(False)
            held.append(sock)
        answers: dict[int, bytes] = {}
        until = time.monotonic() + BODY_TIMEOUT_S * 0.6  # before the body timeout closes the rest
        while time.monotonic() < until:
            for i, sock in enumerate(held):
                try:
                    answers[i] = answers.get(i, b"") + sock.recv(65536)
                except BlockingIOError:
                    pass
                except ConnectionResetError:  # closed after its answer, with our bytes unread
                    answers.setdefault(i, b"")
            time.sleep(0.05)
        assert len(answers) == 1, answers
        answer = next(iter(answers.values()))
        assert answer.startswith(b"HTTP/1.1 503") and b"server_busy" in answer, answer[:300]
        # Small requests still pass meanwhile.
        assert httpx.post(server.base_url + "/v1/assistants", json={"model": "m"}, timeout=5).status_code == 200
    finally:
        for sock in held:
            sock.close()
    # Once those are gone, a large body is accepted again.
    time.sleep(0.5)
    big = httpx.post(server.base_url + "/v1/assistants", json={"model": "m", "instructions": "y" * 200_000},
                     timeout=10)
    assert big.status_code == 200, big.text[:200]


def test_an_upload_over_the_limit_is_refused_while_it_streams(server: SpindleServer) -> None:
    boundary = "spindleboundary"
    sent = 0

    def body() -> Iterator[bytes]:  # chunked, so no Content-Length tells the size up front
        nonlocal sent
        yield (f"--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
               f"--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
               "content-type: text/plain\r\n\r\n").encode()
        for _ in range(64):  # 64 MB against the server's 8 MB upload limit
            sent += 1 << 20
            yield b"z" * (1 << 20)
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        response = httpx.post(server.base_url + "/v1/files", content=body(), timeout=30,
                              headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        error = error_of(response, 413)
        assert error["code"] == "file_too_large" and error["param"] == "file"
    except httpx.TransportError:
        pass  # answered and closed while we were still sending
    assert sent < 32 << 20, f"{sent >> 20} MB were read of an upload over an 8 MB limit"
    assert httpx.get(server.base_url + "/v1/files", timeout=5).json()["data"] == []


def test_an_upload_dropped_halfway_is_one_log_line(server: SpindleServer) -> None:
    since = server.log_size()
    boundary = "spindleboundary"
    head = (f"--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            f"--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
            "content-type: text/plain\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(f"POST /v1/files HTTP/1.1\r\nHost: x\r\ncontent-type: multipart/form-data; boundary={boundary}"
                     f"\r\ncontent-length: {len(head) + (4 << 20)}\r\n\r\n".encode() + head + b"y" * (1 << 20))
        time.sleep(0.3)
    finally:
        sock.close()  # gone with 3 MB still to send
    deadline = time.monotonic() + 10
    while "disconnected" not in server.log_text(since) and time.monotonic() < deadline:
        time.sleep(0.1)
    logged = server.log_text(since)
    assert "disconnected before sending the whole body of POST /v1/files" in logged, logged
    assert "Traceback" not in logged and " ERROR " not in logged, logged
    assert logged.count("disconnected") == 1, logged
    assert httpx.get(server.base_url + "/v1/files", timeout=5).json()["data"] == []


def test_json_error_bodies_are_json(server: SpindleServer) -> None:
    response = httpx.post(server.base_url + "/v1/threads", content=json.dumps({"metadata": {"k": "\ud800"}}),
                          headers=JSON, timeout=5)
    assert error_of(response, 400)["param"] == "metadata.k"
