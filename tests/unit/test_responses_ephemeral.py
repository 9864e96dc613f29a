"""``store: false`` responses cut by a crash: what they leave is purged once settled, by the
run sweep of any process (spindle/responses/ephemeral.py). A dead process is simulated as in
tests/unit/test_runs.py: ``engine.abandon`` stops the execution without writing, and the
answering process's marker is handed to an owner whose pid no longer exists."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import openai
from fastapi.testclient import TestClient

from spindle.engine import leases
from spindle.responses.ephemeral import KIND, marker_id
from spindle.store.base import Update
from tests.upstream.server import UpstreamHandle

PROJECT = "default"  # local mode


def _dead_owner() -> str:
    """An owner id on this machine whose process has exited (``leases.owner_gone`` is True)."""
    child = subprocess.Popen(["true"])
    child.wait()
    machine = leases.process_owner().split("|")[0]
    return f"{machine}|{child.pid}|dead"


def _left(http: TestClient, run: dict[str, Any]) -> dict[str, Any]:
    """What the store still holds of a response."""
    store = http.app.state.runtime.store  # type: ignore[attr-defined]
    call = http.portal.call  # type: ignore[union-attr]
    return {"run": call(store.get, "run", run["id"], PROJECT),
            "thread": call(store.get, "thread", run["thread_id"], PROJECT),
            "messages": call(lambda: store.scan("message", parent=run["thread_id"])),
            "events": call(store.read_events, run["id"], 0),
            "marker": call(store.get, KIND, marker_id(run["id"]), PROJECT)}


def _process_died(http: TestClient, run: dict[str, Any]) -> None:
    """The answering process is gone: it neither renews its marker nor purges."""
    runtime = http.app.state.runtime  # type: ignore[attr-defined]
    service = runtime.extensions["responses"]
    service.ephemeral.abandon(run["id"])
    http.portal.call(runtime.store.write, [  # type: ignore[union-attr]
        Update(KIND, marker_id(run["id"]), fields={"answerer": _dead_owner()})])


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_cut_mid_run_is_purged_once_recovery_settled_it(http: TestClient, upstream: UpstreamHandle) -> None:
    runtime = http.app.state.runtime  # type: ignore[attr-defined]
    engine, service, call = runtime.engine, runtime.extensions["responses"], http.portal.call  # type: ignore[union-attr]
    upstream.script("forget me later", [{"content": "partial text that never ends", "chunk_chars": 2,
                                         "delay_ms": 10, "hang": True}])
    run = call(service.create, PROJECT, {"model": "m", "input": "forget me later", "store": False})
    _wait(lambda: any(e.event == "thread.message.delta" for e in _left(http, run)["events"]))
    call(engine.abandon, run["id"])  # the executing process died mid-run ...
    _process_died(http, run)  # ... and it was the answering one
    left = _left(http, run)
    assert left["run"]["status"] == "in_progress" and left["marker"] is not None and left["events"]
    call(engine.run_sweepers)  # not settled yet: recovery goes first
    assert _left(http, run)["run"] is not None
    call(engine.recover, False)
    assert _left(http, run)["run"]["status"] == "failed"
    call(engine.run_sweepers)
    assert _left(http, run) == {"run": None, "thread": None, "messages": [], "events": [], "marker": None}


def test_settled_but_never_answered_is_purged(http: TestClient, upstream: UpstreamHandle) -> None:
    """The run completed, the process died before it purged (or another process ran it)."""
    runtime = http.app.state.runtime  # type: ignore[attr-defined]
    engine, service, call = runtime.engine, runtime.extensions["responses"], http.portal.call  # type: ignore[union-attr]
    run = call(service.create, PROJECT, {"model": "m", "input": "quick", "store": False})
    _wait(lambda: _left(http, run)["run"]["status"] == "completed")
    # While its answerer lives and answers, the sweep renews the marker and keeps everything.
    before = _left(http, run)["marker"]["answer_until"]
    time.sleep(0.05)
    call(engine.run_sweepers)
    left = _left(http, run)
    assert left["run"] is not None and left["marker"]["answer_until"] > before
    _process_died(http, run)
    call(engine.run_sweepers)
    assert _left(http, run) == {"run": None, "thread": None, "messages": [], "events": [], "marker": None}


def test_answerer_alive_but_silent_keeps_it_until_its_lease_runs_out(http: TestClient) -> None:
    """Another live process answering (its pid exists, or it is on another machine) is
    trusted while its lease lasts."""
    runtime = http.app.state.runtime  # type: ignore[attr-defined]
    engine, service, call = runtime.engine, runtime.extensions["responses"], http.portal.call  # type: ignore[union-attr]
    run = call(service.create, PROJECT, {"model": "m", "input": "elsewhere", "store": False})
    _wait(lambda: _left(http, run)["run"]["status"] == "completed")
    service.ephemeral.abandon(run["id"])
    elsewhere = "another-host/boot/ns|4242|token"  # not comparable: only its lease counts
    call(runtime.store.write, [Update(KIND, marker_id(run["id"]), fields={"answerer": elsewhere})])
    call(engine.run_sweepers)
    assert _left(http, run)["run"] is not None
    call(runtime.store.write, [Update(KIND, marker_id(run["id"]), fields={"answer_until": time.time() - 1})])
    call(engine.run_sweepers)
    assert _left(http, run)["run"] is None and _left(http, run)["marker"] is None


def test_answered_normally_leaves_no_marker(client: openai.OpenAI, http: TestClient) -> None:
    store = http.app.state.runtime.store  # type: ignore[attr-defined]
    kept = client.responses.create(model="m", input="keep me")
    client.responses.create(model="m", input="forget me", store=False)
    assert http.portal.call(lambda: store.scan(KIND)) == []  # type: ignore[union-attr]
    assert client.responses.retrieve(kept.id).status == "completed"  # a stored one has none to begin with
