"""The ASGI application: wiring at start-up, routes under /v1 (and Azure's /openai paths)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from spindle import responses
from spindle.api import (
    assistants,
    containers_routes,
    conversations_routes,
    files,
    operations,
    responses_routes,
    runs,
    threads,
)
from spindle.api.common import today
from spindle.api.context import AzureRoutingMiddleware, KeyRing
from spindle.api.errors import install_error_handlers, subsystem_required
from spindle.api.limits import RequestLimitsMiddleware
from spindle.api.responses import SafeJSONResponse
from spindle.engine.events import EventLog
from spindle.engine.runner import RunEngine
from spindle.llm.client import build_model
from spindle.observability import Metrics, MetricsMiddleware, runtime_gauges
from spindle.runtime import Runtime
from spindle.services.assistants import AssistantService
from spindle.services.file_references import FileReferences
from spindle.services.files import FileService
from spindle.services.messages import MessageService
from spindle.services.runs import RunService
from spindle.services.threads import ThreadService
from spindle.settings import Settings
from spindle.store.factory import blob_store, metadata_store
from spindle.tools import build_tools

log = logging.getLogger(__name__)


async def build_runtime(settings: Settings) -> Runtime:
    """Open storage and wire every service; the caller must ``close_runtime`` it."""
    server = settings.server
    data_dir = server.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store = metadata_store(server)
    await store.open()
    blobs = blob_store(server)
    blobs.open_sync()
    events = EventLog(store)
    store.on_commit = events.notify
    store.on_remote_commit = events.poke
    model = build_model(server.llm_base_url, server.llm_api_key, server.llm_model_map, server.llm_timeout_s,
                        server.llm_azure_api_version)
    runtime = Runtime(settings=settings, store=store, blobs=blobs, files=FileService(store, blobs), events=events,
                      model=model)
    runtime.extensions["keyring"] = KeyRing(server.api_keys)
    runtime.extensions["metrics"] = observability = Metrics()
    observability.gauge(runtime_gauges(runtime))
    runtime.files.add_delete_hook(FileReferences(store).on_file_deleted)
    _build_extensions(runtime)
    assistants_service = AssistantService(runtime)
    messages_service = MessageService(runtime)
    threads_service = ThreadService(runtime, messages_service)
    runtime.extensions.update(assistants=assistants_service, messages=messages_service, threads=threads_service,
                              runs=RunService(runtime, assistants_service, threads_service, messages_service))
    runtime.tools, runtime.extensions["tool_problems"] = build_tools(runtime)
    responses.install(runtime)
    runtime.engine = RunEngine(runtime)
    for kind, tool in list(runtime.tools.items()):
        try:
            await tool.start()
        except Exception as exc:  # e.g. no sandbox on this host: say why, never run without it
            log.exception("built-in tool %s failed to start; runs that use it will fail", kind)
            runtime.extensions["tool_problems"][kind] = f"{type(exc).__name__}: {exc}"
            del runtime.tools[kind]
    extension = runtime.extensions.get("vector_stores")
    if extension is not None and hasattr(extension, "start"):
        await extension.start()
    await runtime.engine.start()
    return runtime


def _build_extensions(runtime: Runtime) -> None:
    try:
        from spindle import vector_stores

        service = vector_stores.build(runtime)
    except Exception as exc:  # everything else works without it; its routes answer 503
        log.exception("vector stores (File Search) failed to start; their routes will answer 503")
        runtime.extensions["vector_stores_problem"] = f"{type(exc).__name__}: {exc}"
        return
    runtime.extensions["vector_stores"] = service
    runtime.files.add_delete_hook(service.on_file_deleted)


async def close_runtime(runtime: Runtime) -> None:
    if runtime.engine is not None:
        await runtime.engine.stop(drain_s=runtime.settings.server.drain_timeout_s)
    extension = runtime.extensions.get("vector_stores")
    if extension is not None and hasattr(extension, "stop"):
        await extension.stop()
    for tool in runtime.tools.values():
        await tool.shutdown()
    await runtime.model.aclose()
    await runtime.store.close()


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await build_runtime(settings)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await close_runtime(runtime)

    # SafeJSONResponse: a stored string that cannot be encoded must never turn a response into a 500.
    app = FastAPI(title="Spindle", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=SafeJSONResponse)
    install_error_handlers(app)
    # runs before threads: POST /threads/runs must not be taken for POST /threads/{thread_id}
    for module in (files, assistants, runs, threads, responses_routes, conversations_routes, containers_routes):
        app.include_router(module.router, prefix="/v1")
    _include_optional_routers(app)

    app.include_router(operations.router)

    def metrics() -> Metrics | None:
        runtime = getattr(app.state, "runtime", None)
        return runtime.extensions.get("metrics") if runtime is not None else None

    # Innermost: it sees the route the router matched (after Azure paths were mapped).
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestLimitsMiddleware, max_json_bytes=settings.server.max_json_body_bytes,
                       max_upload_bytes=settings.server.max_upload_bytes)
    app.add_middleware(AzureRoutingMiddleware, today=today)
    return app


def _include_optional_routers(app: FastAPI) -> None:
    try:
        from spindle.api import vector_stores
    except ModuleNotFoundError as exc:
        log.warning("vector store routes unavailable: %s", exc)
        return
    except Exception:  # the File Search subsystem is optional; the rest still works
        log.exception("vector store routes unavailable")
        return
    app.include_router(vector_stores.router, prefix="/v1",
                       dependencies=[Depends(subsystem_required("vector_stores", "Vector stores (File Search)"))])
