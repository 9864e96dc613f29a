"""Routes for operators and load balancers, outside /v1: ``/healthz`` (alive, and what is
configured), ``/readyz`` (200 only when this process can serve: store, blobs, sandbox) and
``/metrics`` (Prometheus text format, this process's figures)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from spindle.api.common import runtime_of
from spindle.api.responses import SafeJSONResponse
from spindle.observability import CONTENT_TYPE, readiness

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    stats = getattr(runtime.extensions.get("sandbox"), "stats", None)
    engine = runtime.engine
    # Which process answered (behind a balancer or with --workers, operators need to know).
    return {"status": "ok", "process": engine.owner if engine is not None else None,
            "model": runtime.model.describe(), "tools": sorted(runtime.tools),
            "tool_problems": runtime.extensions.get("tool_problems", {}),
            "sandbox_sessions": stats() if callable(stats) else None}


@router.get("/readyz")
async def readyz(request: Request) -> SafeJSONResponse:
    ready, checks = await readiness(runtime_of(request))
    return SafeJSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(runtime_of(request).extensions["metrics"].render(), media_type=CONTENT_TYPE)
