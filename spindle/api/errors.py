"""Renders every error in OpenAI's envelope with the status the SDK maps to its exceptions."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from spindle.api.common import validation_error
from spindle.errors import SpindleError

log = logging.getLogger(__name__)


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

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Our own bug: logged with its traceback, answered 500, never passed off as a 400.
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(envelope("The server had an error while processing your request.", "server_error"),
                            status_code=500)


__all__ = ["install_error_handlers", "validation_error"]
