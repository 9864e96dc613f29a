"""``GET /threads`` on every prefix, and the Azure AI Foundry Agents routing
(``/api/projects/{project}/...``, ``api-version=v1``) that the azure-ai-agents SDK uses."""

from __future__ import annotations

from typing import Any

import pytest

from spindle.api.context import check_azure_version

ALPHA = {"api-key": "key-a"}
BETA = {"authorization": "Bearer key-b"}
PREFIXES = ["/v1", "/openai", "/api/projects/alpha"]


def url(prefix: str, path: str, **params: str) -> str:
    query = {"api-version": "v1", **params} if prefix != "/v1" else params
    return prefix + path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


@pytest.fixture
def keyed(make_app: Any) -> Any:
    return make_app(api_keys="key-a:alpha,key-b:beta")


def make_threads(http: Any, headers: dict[str, str], n: int) -> list[str]:
    ids = []
    for i in range(n):
        response = http.post("/v1/threads", json={"metadata": {"i": str(i)}}, headers=headers)
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_threads_pages_in_both_orders(keyed: Any, prefix: str) -> None:
    ids = make_threads(keyed, ALPHA, 5)
    make_threads(keyed, BETA, 2)  # another project's threads never appear
    page = keyed.get(url(prefix, "/threads", limit="2"), headers=ALPHA).json()
    assert page["object"] == "list" and [t["id"] for t in page["data"]] == ids[:2:-1][:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[4], ids[3], True)
    assert page["data"][0]["object"] == "thread" and page["data"][0]["metadata"] == {"i": "4"}
    # Walk the way the azure-ai-agents SDK does: `after` = last_id until last_id is null.
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": "2", "order": "asc", **({"after": after} if after else {})}
        body = keyed.get(url(prefix, "/threads", **params), headers=ALPHA).json()
        pages += 1
        seen += [t["id"] for t in body["data"]]
        after = body["last_id"]
        if after is None:
            break
    assert seen == ids and pages == 4  # 2 + 2 + 1, then an empty page ends it
    assert body == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    before = keyed.get(url(prefix, "/threads", before=ids[3], limit="2", order="asc"), headers=ALPHA).json()
    assert [t["id"] for t in before["data"]] == ids[1:3] and before["has_more"] is True
    beta = keyed.get(url("/v1", "/threads"), headers=BETA).json()
    assert not set(ids) & {t["id"] for t in beta["data"]} and len(beta["data"]) == 2


def test_list_threads_bad_parameters(keyed: Any) -> None:
    foreign = make_threads(keyed, BETA, 1)[0]
    for params, param in (({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"order": "up"}, "order"),
                          ({"after": "thread_nope"}, "after"), ({"before": foreign}, "before")):
        response = keyed.get(url("/v1", "/threads", **params), headers=ALPHA)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["param"] == param
    assert keyed.get("/v1/threads").status_code == 401


def test_deleted_threads_leave_the_list(http: Any) -> None:
    ids = make_threads(http, {}, 2)
    assert http.delete(f"/v1/threads/{ids[0]}").status_code == 200
    assert [t["id"] for t in http.get("/v1/threads").json()["data"]] == [ids[1]]


def test_project_routes_serve_the_same_api(keyed: Any) -> None:
    created = keyed.post(url("/api/projects/alpha", "/assistants"), json={"model": "m", "name": "a"}, headers=ALPHA)
    assert created.status_code == 200 and created.json()["object"] == "assistant"
    assistant = created.json()["id"]
    for prefix in PREFIXES:
        got = keyed.get(url(prefix, f"/assistants/{assistant}"), headers=ALPHA)
        assert got.status_code == 200 and got.json()["tool_resources"] == {}  # the v2 shape
    # The SDK's legacy preview version is a dated version like any other.
    assert keyed.get(url("/api/projects/alpha", "/assistants", **{"api-version": "2025-05-15-preview"}),
                     headers=ALPHA).status_code == 200


def test_project_segment_is_the_keys_project(keyed: Any) -> None:
    beta_thread = make_threads(keyed, BETA, 1)[0]
    for method, path in (("GET", f"/threads/{beta_thread}"), ("GET", "/threads"), ("POST", "/threads")):
        response = keyed.request(method, url("/api/projects/beta", path), headers=ALPHA)
        assert response.status_code == 404, (method, path)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("project", "project_not_found")
        assert "'alpha'" in error["message"] and "key-" not in error["message"]
    assert keyed.get(url("/api/projects/beta", "/threads"), headers=BETA).status_code == 200
    # No key or a wrong key: the usual 401, whatever the segment says.
    assert keyed.get(url("/api/projects/beta", "/threads")).status_code == 401
    wrong = keyed.get(url("/api/projects/alpha", "/threads"), headers={"api-key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_local_mode_accepts_any_project_name(http: Any) -> None:
    ids = make_threads(http, {}, 1)
    for name in ("my-project", "another"):
        listed = http.get(url(f"/api/projects/{name}", "/threads"))
        assert listed.status_code == 200 and [t["id"] for t in listed.json()["data"]] == ids


def test_project_route_versions(http: Any) -> None:
    missing = http.get("/api/projects/p/threads")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingApiVersionParameter"
    for bad in ("v2", "V1", "2023-01-01", "2999-01-01"):
        response = http.get(f"/api/projects/p/threads?api-version={bad}")
        assert response.status_code == 400 and response.json()["error"]["param"] == "api-version", bad
    assert http.get("/openai/threads?api-version=v1").status_code == 200
    assert http.get("/api/projects/p").status_code == 404
    assert http.get("/api/projects/p/nowhere?api-version=v1").status_code == 404
    assert check_azure_version("v1", "2026-01-01") == "v2"
