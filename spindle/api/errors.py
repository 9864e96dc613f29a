"""Renders every error in OpenAI's envelope with the status the SDK maps to its exceptions."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from spindle.api.common import request_context, runtime_of, validation_error
from spindle.api.context import RequestContext
from spindle.api.responses import SafeJSONResponse as JSONResponse
from spindle.errors import ServiceUnavailableError, SpindleError

log = logging.getLogger(__name__)


def subsystem_required(name: str, label: str) -> Callable[..., Awaitable[None]]:
    """A route dependency: 503 while ``runtime.extensions[name]`` failed to start (after the key
    is checked, so only a caller with access learns about it)."""

    async def dependency(request: Request, _ctx: RequestContext = Depends(request_context)) -> None:
        runtime = runtime_of(request)
        if runtime.extensions.get(name) is None:
            problem = runtime.extensions.get(f"{name}_problem", "it is not running")
            raise ServiceUnavailableError(
                f"{label} is unavailable: it failed to start on this server ({problem}). "
                "The server log has the details.", code="service_unavailable")

    return dependency


def envelope(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SpindleError)
    async def spindle_error(_request: Request, exc: SpindleError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def request_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        return JSONResponse(envelope(f"Invalid value for '{param}': {first.get('msg', 'invalid')}.",
                                     "invalid_request_error", param, "invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}."
        else:
            message = str(exc.detail)
        return JSONResponse(envelope(message, "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(request: Request, _exc: ClientDisconnect) -> JSONResponse:
        # The client went away mid-body (a dropped upload): routine, one line, no traceback.
        client = request.client.host if request.client else "?"
        log.info("client %s disconnected before sending the whole body of %s %s", client, request.method,
                 request.url.path)
        return JSONResponse(envelope("The client disconnected.", "invalid_request_error"), status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Our own bug: logged with its traceback, answered 500, never passed off as a 400.
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(envelope("The server had an error while processing your request.", "server_error"),
                            status_code=500)


__all__ = ["ServiceUnavailableError", "install_error_handlers", "subsystem_required", "validation_error"]
