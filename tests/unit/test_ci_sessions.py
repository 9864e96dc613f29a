"""Code Interpreter session ownership rows (spindle/tools/code_interpreter/ownership.py), on
the app's own store (SQLite, or PostgreSQL with SPINDLE_TEST_BACKENDS): two processes are two
``SessionOwnership`` objects with different owner ids on one store."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from spindle.tools.code_interpreter.ownership import SessionOwnership


def test_takeover_loss_and_leases(http: TestClient) -> None:
    store = http.app.state.runtime.store  # type: ignore[attr-defined]
    call = http.portal.call  # type: ignore[union-attr]
    a, b = SessionOwnership(store, "proc-a", 30), SessionOwnership(store, "proc-b", 30)
    thread = "thread_ownership_test"
    assert call(a.take, "p", thread) is False  # first session of the thread: nothing lost
    row = call(a.row, "p", thread)
    assert row is not None and row["id"] != thread  # never the thread's own id (ids are unique across kinds)
    assert b.alive_elsewhere(row) and not a.alive_elsewhere(row)
    assert call(b.owner_of, "p", thread) == "proc-a"
    # b takes over a session that never ran code: nothing to tell
    assert call(b.take, "p", thread) is False
    assert call(a.still_ours, "p", thread) is False
    assert call(a.renew) == ["p/thread_ownership_test"] and not a.held  # a learns it lost the row
    call(b.executed, "p", thread)
    call(a.executed, "p", thread)  # not a's any more: no effect
    assert call(b.row, "p", thread)["owner"] == "proc-b"
    # a session that ran code, taken over: its state is lost, and the new holder is told
    assert call(a.take, "p", thread) is True
    assert call(b.renew) == ["p/thread_ownership_test"]  # b's renewal finds it taken over
    assert "p/thread_ownership_test" not in b.held and "p/thread_ownership_test" in a.held
    # leaving: the row stays (a later process must still learn the state is gone), the lease not
    call(a.let_go_all)
    row = call(a.row, "p", thread)
    assert row["lease_until"] <= time.time() and row["owner"] == "proc-a"
    assert call(b.owner_of, "p", thread) is None and not b.alive_elsewhere(row)
    call(b.forget, "p", thread)
    assert call(a.row, "p", thread) is None
