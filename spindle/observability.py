"""What operators watch: ``/metrics`` (Prometheus text format, per process) and ``/readyz``.

Each app has its own registry (several apps can live in one test process). Counters and
histograms are fed where things happen (the HTTP middleware, the run engine, executions);
gauges that describe current state (sessions, runs executing here) are read at scrape time.
``/readyz`` answers 200 only when this process can reach its metadata store, its blob store
and, when Code Interpreter is on, its sandbox — what a load balancer should route on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from spindle.runtime import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("spindle_http_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=r)
        self.request_seconds = Histogram("spindle_http_request_seconds", "Time to the response's first byte",
                                         ["route"], registry=r,
                                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.runs_finished = Counter("spindle_runs_finished", "Runs that ended in this process, by status",
                                     ["status"], registry=r)
        self.claim_seconds = Histogram("spindle_run_claim_seconds", "From queued to claimed by this process",
                                       registry=r, buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60))
        self.upstream_seconds = Histogram("spindle_upstream_turn_seconds", "One model turn, request to last token",
                                          registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
        self.upstream_errors = Counter("spindle_upstream_errors", "Model backend failures, by code", ["code"],
                                       registry=r)
        self._gauges: list[Callable[[], Iterable[Metric]]] = []
        r.register(_Callback(self._gauges))

    def gauge(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Add metrics computed at scrape time."""
        self._gauges.append(read)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _Callback:
    def __init__(self, reads: list[Callable[[], Iterable[Metric]]]) -> None:
        self.reads = reads

    def collect(self) -> Iterable[Metric]:
        for read in self.reads:
            yield from read()

    def describe(self) -> Iterable[Metric]:
        return []


def runtime_gauges(runtime: Runtime) -> Callable[[], Iterable[Metric]]:
    def read() -> Iterable[Metric]:
        engine = runtime.engine
        runs = GaugeMetricFamily("spindle_runs_here", "Runs this process holds, by state", labels=["state"])
        if engine is not None:
            for state, count in engine.counts().items():
                runs.add_metric([state], count)
        yield runs
        if engine is not None:
            yield GaugeMetricFamily("spindle_runs_queued", "Queued runs in the store, all processes (as of the last "
                                    "sweep, every lease/3 seconds)", value=float(engine.queued_in_store))
        held = getattr(runtime.extensions.get("code_interpreter_sessions"), "held", None)
        if isinstance(held, dict):
            yield GaugeMetricFamily("spindle_code_interpreter_sessions_held", "Threads whose Code Interpreter "
                                    "session this process holds (recorded in the store)", value=float(len(held)))
        stats = getattr(runtime.extensions.get("sandbox"), "stats", None)
        if callable(stats):
            sessions = GaugeMetricFamily("spindle_sandbox_sessions", "Code Interpreter sessions", labels=["state"])
            for state, count in stats().items():
                if state not in ("pool_size", "max"):
                    sessions.add_metric([state], count)
            yield sessions
        vector_stores = runtime.extensions.get("vector_stores")
        backlog = getattr(getattr(vector_stores, "worker", None), "backlog", None)
        if callable(backlog):
            yield GaugeMetricFamily("spindle_ingestion_backlog", "Files waiting to be ingested here",
                                    value=float(backlog()))
    return read


class MetricsMiddleware:
    """Counts every HTTP request by route template (not raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                metrics = self.metrics()
                if metrics is not None:
                    metrics.request_seconds.labels(_route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                metrics.requests.labels(_route(scope), scope.get("method", ""), str(status["code"])).inc()


def _route(scope: Scope) -> str:
    """The matched route's template with the API prefix (FastAPI records the route as
    declared in its router, without the ``/v1`` it was included under)."""
    path = getattr(scope.get("route"), "path", None)
    if not path:
        return "unmatched"
    if str(scope.get("path", "")).startswith("/v1/") and not str(path).startswith("/v1"):
        return f"/v1{path}"
    return str(path)


async def readiness(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    """Each dependency this process needs, checked now (bounded in time)."""
    checks: dict[str, Any] = {}

    async def check(name: str, probe: Callable[[], Any]) -> None:
        try:
            await asyncio.wait_for(probe(), 5)
            checks[name] = "ok"
        except Exception as exc:  # reported, not raised: this is the answer
            checks[name] = f"{type(exc).__name__}: {exc}"[:300]

    if runtime.engine is not None and runtime.engine.draining:
        checks["accepting_work"] = "draining: this process is stopping (SIGTERM)"
    await check("metadata_store", lambda: runtime.store.get("readyz", "readyz", None))
    await check("blob_store", lambda: asyncio.to_thread(runtime.blobs.ready))
    sandbox = runtime.extensions.get("sandbox")
    if runtime.settings.sandbox.enabled and sandbox is not None:
        await check("sandbox", sandbox.ready)
    elif runtime.settings.sandbox.enabled:
        checks["sandbox"] = runtime.extensions.get("tool_problems", {}).get("code_interpreter", "not started")
    return all(v == "ok" for v in checks.values()), checks
