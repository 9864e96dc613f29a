"""/metrics, /readyz and /healthz: what operators and load balancers read."""

from __future__ import annotations

import shutil

import openai
from fastapi.testclient import TestClient

from spindle.store.s3 import S3BlobStore
from tests.upstream.server import UpstreamHandle


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric == name and got == wanted:
            return float(value)
    return 0.0


def test_metrics_count_requests_runs_and_the_upstream(http: TestClient, client: openai.OpenAI,
                                                      upstream: UpstreamHandle) -> None:
    upstream.script("count me", [{"content": "counted"}])
    upstream.script("break me", [{"error": {"status": 500, "message": "down"}}])
    assistant = client.beta.assistants.create(model="m")
    for word, status in (("count me", "completed"), ("break me", "failed")):
        thread = client.beta.threads.create(messages=[{"role": "user", "content": word}])
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                       poll_interval_ms=20)
        assert run.status == status
    http.get(f"/openai/assistants/{assistant.id}", params={"api-version": "2024-05-01-preview"},
             headers={"api-key": "k"})
    text = http.get("/metrics").text
    assert _metric(text, "spindle_http_requests_total", route="/v1/assistants", method="POST", status="200") == 1
    # Azure paths count under the route they map to, ids never become labels
    assert _metric(text, "spindle_http_requests_total", route="/v1/assistants/{assistant_id}", method="GET",
                   status="200") == 1
    assert _metric(text, "spindle_runs_finished_total", status="completed") == 1
    assert _metric(text, "spindle_runs_finished_total", status="failed") == 1
    assert _metric(text, "spindle_upstream_errors_total", code="server_error") == 1
    assert _metric(text, "spindle_upstream_turn_seconds_count") >= 1
    assert _metric(text, "spindle_run_claim_seconds_count") == 2
    assert _metric(text, "spindle_runs_here", state="executing") == 0
    assert assistant.id not in text


def test_readyz_says_what_is_missing(http: TestClient) -> None:
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"metadata_store": "ok", "blob_store": "ok"}
    blobs = http.app.state.runtime.blobs  # type: ignore[attr-defined]
    if isinstance(blobs, S3BlobStore):  # SPINDLE_TEST_BACKENDS=...s3: a bucket that is gone
        bucket, blobs.bucket = blobs.bucket, "no-such-bucket"
        broken = http.get("/readyz")
        blobs.bucket = bucket
        assert "404" in broken.json()["checks"]["blob_store"]
    else:
        staging = blobs.staging_dir()
        shutil.rmtree(staging)
        broken = http.get("/readyz")
        staging.mkdir()
        assert "not writable" in broken.json()["checks"]["blob_store"]
    assert broken.status_code == 503 and broken.json()["ready"] is False
    assert http.get("/readyz").status_code == 200
    assert http.get("/healthz").json()["status"] == "ok"


def test_queue_depth_and_draining(http: TestClient, client: openai.OpenAI, upstream: UpstreamHandle) -> None:
    """A process told to stop is not ready (a balancer with health checks moves on) and
    claims nothing; /metrics shows the store's queue as of the last sweep."""
    engine = http.app.state.runtime.engine  # type: ignore[attr-defined]
    upstream.script("wait in the queue", [{"content": "done"}])
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "wait in the queue"}])
    assert http.get("/readyz").status_code == 200
    engine.begin_drain()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    http.portal.call(engine.recover, False)  # type: ignore[union-attr]  # a sweep, while draining
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "queued"
    assert _metric(http.get("/metrics").text, "spindle_runs_queued") == 1
    ready = http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["accepting_work"].startswith("draining")
    engine._draining = False  # as a restarted process would, it takes the queued run
    http.portal.call(engine.recover, False)  # type: ignore[union-attr]
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=20)
    assert done.status == "completed"
    http.portal.call(engine.recover, False)  # type: ignore[union-attr]
    assert _metric(http.get("/metrics").text, "spindle_runs_queued") == 0
    assert http.get("/readyz").status_code == 200
