"""Attacks on the Azure AI Foundry routing (``/api/projects/{project}/...``) and ``GET /threads``:
a valid key reaching another project through the URL, repeated or mixed auth headers, path
tricks around the segment, and cursor probing for other projects' thread ids."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import _fresh_script, make_app, upstream  # noqa: F401  fixtures of the attacked tier

ALPHA_KEY, BETA_KEY = "key-alpha", "key-beta"


@pytest.fixture
def app(make_app: Any) -> Any:  # noqa: F811
    return make_app(api_keys=f"{ALPHA_KEY}:alpha,{BETA_KEY}:beta")


def beta_objects(app: Any) -> dict[str, str]:
    headers = {"api-key": BETA_KEY}
    assistant = app.post("/v1/assistants", json={"model": "m"}, headers=headers).json()["id"]
    thread = app.post("/v1/threads", json={"messages": [{"role": "user", "content": "beta secret"}]},
                      headers=headers).json()["id"]
    file = app.post("/v1/files", files={"file": ("s.txt", b"beta bytes")}, data={"purpose": "assistants"},
                    headers=headers).json()["id"]
    return {"assistant": assistant, "thread": thread, "file": file}


def test_own_key_under_another_projects_segment_reaches_nothing(app: Any) -> None:
    beta = beta_objects(app)
    calls = [("GET", "/assistants"), ("GET", f"/assistants/{beta['assistant']}"), ("POST", "/assistants"),
             ("GET", "/threads"), ("GET", f"/threads/{beta['thread']}"), ("GET", f"/threads/{beta['thread']}/messages"),
             ("POST", f"/threads/{beta['thread']}/runs"), ("DELETE", f"/threads/{beta['thread']}"),
             ("GET", "/files"), ("GET", f"/files/{beta['file']}/content"), ("GET", "/vector_stores")]
    for method, path in calls:
        response = app.request(method, f"/api/projects/beta{path}?api-version=v1", json={"model": "m"},
                               headers={"api-key": ALPHA_KEY})
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "project_not_found"
        assert "beta secret" not in response.text and "beta bytes" not in response.text
    # Nothing was made or removed on either side.
    assert app.get("/v1/assistants", headers={"api-key": ALPHA_KEY}).json()["data"] == []
    assert app.get(f"/v1/threads/{beta['thread']}", headers={"api-key": BETA_KEY}).status_code == 200


@pytest.mark.parametrize("headers", [
    [("api-key", ALPHA_KEY), ("api-key", BETA_KEY)],
    [("authorization", f"Bearer {ALPHA_KEY}"), ("authorization", f"Bearer {BETA_KEY}")],
    [("api-key", ALPHA_KEY), ("authorization", f"Bearer {BETA_KEY}")],
])
def test_repeated_or_mixed_auth_headers_cannot_pair_one_key_with_another_project(app: Any,
                                                                                   headers: list[Any]) -> None:
    beta = beta_objects(app)
    # Whichever key the route authenticates with, the segment check looked at the same one.
    response = app.get(f"/api/projects/beta/threads/{beta['thread']}?api-version=v1", headers=headers)
    assert response.status_code == 404 and response.json()["error"]["code"] == "project_not_found"
    listed = app.get("/api/projects/beta/threads?api-version=v1", headers=headers)
    assert listed.status_code == 404 and beta["thread"] not in listed.text


@pytest.mark.parametrize("path", [
    "/api/projects/alpha/%2e%2e/beta/threads",
    "/api/projects/alpha%2F..%2Fbeta/threads",
    "/api/projects//threads",
    "/api/projects/alpha/openai/threads",
    "/api/projects/alpha/api/projects/beta/threads",
    "/api/projects/alpha%00/threads",
])
def test_path_tricks_around_the_segment(app: Any, path: str) -> None:
    beta = beta_objects(app)
    response = app.get(path + "?api-version=v1", headers={"api-key": ALPHA_KEY})
    assert response.status_code in (400, 404), response.text
    assert beta["thread"] not in response.text


def test_thread_cursors_are_no_oracle_for_other_projects(app: Any) -> None:
    beta = beta_objects(app)
    errors = [app.get(f"/api/projects/alpha/threads?api-version=v1&{param}={cursor}",
                      headers={"api-key": ALPHA_KEY}).json()["error"]
              for param in ("after", "before") for cursor in (beta["thread"], "thread_doesnotexist000000")]
    # A foreign thread id and a made-up one get the same answer, apart from the echoed id.
    shapes = [(e["param"], e["code"], e["message"].replace(beta["thread"], "ID").replace("thread_doesnotexist000000",
                                                                                          "ID")) for e in errors]
    assert shapes[0] == shapes[1] and shapes[2] == shapes[3]


def test_a_huge_segment_is_not_echoed_whole(app: Any) -> None:
    segment = "p" * 5000
    response = app.get(f"/api/projects/{segment}/threads?api-version=v1", headers={"api-key": ALPHA_KEY})
    assert response.status_code == 404 and len(response.json()["error"]["message"]) < 400
