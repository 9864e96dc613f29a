"""The scripted upstream's HTTP surface: chat completions plus the scripting endpoints.

Chat completions are served at ``/v1/chat/completions``, ``/chat/completions`` and Azure's
``/openai/deployments/{deployment}/chat/completions?api-version=...``. Control endpoints
(``/_script``, ``/_reset``, ``/_requests``) live at the root and under ``/v1``, so either the
root URL or the SDK base URL works for them.

Like several real backends, this server ignores ``tool_choice``: enforcing it is the job of
the server under test, and the tests want to see whether it does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .completions import Completion, completion_object, new_id, piece_count, plan_completion, stream_chunks
from .script import ErrorSpec, LoggedRequest, Reply, ScriptBook, ScriptError
from .validation import ApiError, validate_chat_request


def create_app(
    book: ScriptBook | None = None, *, api_key: str | None = None, delay_ms: float = 0.0
) -> Starlette:
    """Build the ASGI app.

    ``api_key``: when set, chat requests must carry it (``Authorization: Bearer`` or
    ``api-key``), else 401. ``delay_ms``: pause between streamed chunks for replies that do
    not set their own; 0 is the instant mode benchmarks use.
    """
    book = book if book is not None else ScriptBook()

    async def chat_completions(request: Request) -> Response | _SSEResponse:
        deployment = request.path_params.get("deployment")
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        book.log(_entry(request, body))
        try:
            if deployment is not None and "api-version" not in request.query_params:
                raise ApiError(404, "Resource not found", code="404")
            _check_key(request, api_key)
            validate_chat_request(body, model_from_path=deployment)
        except ApiError as error:
            return _error_response(error)

        reply = book.reply_for(body["messages"])
        pace = _Pace.of(reply, delay_ms)
        if reply is not None and reply.error is not None and not reply.error.mid_stream:
            # Refused before any byte of the answer, as a backend that fails up front.
            await asyncio.sleep(pace.first_s)
            return _error_response(_api_error(reply.error))
        completion = plan_completion(body, reply, str(body.get("model") or deployment))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _SSEResponse(lambda gone: _sse_frames(completion, reply, pace, include_usage, gone))
        return await _complete(request, completion, reply, pace)

    async def script(request: Request) -> Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ScriptError("expected an object {'match': ..., 'replies': [...]}")
            book.add_rule(body.get("match"), body.get("replies"))
        except (json.JSONDecodeError, ScriptError) as error:
            return _error_response(ApiError(400, f"bad script: {error}"))
        return JSONResponse({"ok": True})

    async def reset(request: Request) -> Response:
        book.reset()
        return JSONResponse({"ok": True})

    async def requests(request: Request) -> Response:
        entries = book.requests()
        if request.query_params.get("full") in ("1", "true"):
            return JSONResponse([e.as_json() for e in entries])
        return JSONResponse([e.body for e in entries])

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def models(request: Request) -> Response:
        try:
            _check_key(request, api_key)
        except ApiError as error:
            return _error_response(error)
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": "scripted", "object": "model", "created": 0, "owned_by": "tests"}],
            }
        )

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/openai/deployments/{deployment}/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    for prefix in ("", "/v1"):
        routes += [
            Route(f"{prefix}/_script", script, methods=["POST"]),
            Route(f"{prefix}/_reset", reset, methods=["POST"]),
            Route(f"{prefix}/_requests", requests, methods=["GET"]),
        ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    app.state.book = book
    return app


class _Pace:
    """Seconds to wait before the first chunk and between chunks."""

    def __init__(self, first_s: float, between_s: float) -> None:
        self.first_s = first_s
        self.between_s = between_s

    @classmethod
    def of(cls, reply: Reply | None, default_delay_ms: float) -> _Pace:
        if reply is None:
            return cls(0.0, default_delay_ms / 1000)
        between = reply.delay_ms if reply.delay_ms is not None else default_delay_ms
        return cls(reply.first_token_delay_ms / 1000, between / 1000)


async def _complete(request: Request, completion: Completion, reply: Reply | None, pace: _Pace) -> Response:
    if reply is not None and reply.hang:
        await _wait_for_disconnect(request.receive)
        return Response(status_code=499)  # nobody is listening any more
    wait = pace.first_s + pace.between_s * piece_count(completion)
    if wait:
        await asyncio.sleep(wait)
    if reply is not None and reply.error is not None:
        return _error_response(_api_error(reply.error))
    return JSONResponse(completion_object(completion), headers={"x-request-id": new_id("req_")})


async def _sse_frames(
    completion: Completion, reply: Reply | None, pace: _Pace, include_usage: bool, gone: asyncio.Event
) -> AsyncGenerator[bytes, None]:
    error = reply.error if reply is not None else None
    stop_early = error is not None or (reply is not None and reply.hang)
    if pace.first_s:
        await asyncio.sleep(pace.first_s)
    for i, chunk in enumerate(stream_chunks(completion, include_usage=include_usage)):
        if stop_early and (not chunk["choices"] or chunk["choices"][0]["finish_reason"] is not None):
            break
        if i and pace.between_s:
            await asyncio.sleep(pace.between_s)
        yield _frame(chunk)
    else:
        yield b"data: [DONE]\n\n"
        return
    if error is not None:
        yield _frame(_api_error(error).envelope())
        return
    await gone.wait()  # hang: keep the stream open until the client gives up


class _SSEResponse:
    """A server-sent-events response that notices a client disconnect even while idle.

    Starlette's ``StreamingResponse`` only notices a disconnect when a write fails, which a
    hanging stream never attempts; this one watches ``receive`` for ``http.disconnect``.
    """

    def __init__(self, produce: Callable[[asyncio.Event], AsyncGenerator[bytes, None]]) -> None:
        self.produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        watcher = asyncio.create_task(_wait_for_disconnect(receive, gone))
        frames = self.produce(gone)
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", new_id("req_").encode()),
        ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for frame in frames:
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write; nothing left to tell it
        finally:
            watcher.cancel()
            await frames.aclose()


async def _wait_for_disconnect(receive: Receive, gone: asyncio.Event | None = None) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if gone is not None:
        gone.set()


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _api_error(spec: ErrorSpec) -> ApiError:
    return ApiError(spec.status, spec.message, param=spec.param, code=spec.code, type=spec.type)


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status, headers={"x-request-id": new_id("req_")})


def _check_key(request: Request, api_key: str | None) -> None:
    if not api_key:
        return
    bearer = request.headers.get("authorization", "")
    sent = bearer[7:] if bearer.lower().startswith("bearer ") else request.headers.get("api-key", "")
    if sent != api_key:
        raise ApiError(401, f"Incorrect API key provided: {sent[:8]}****.", code="invalid_api_key")


def _entry(request: Request, body: Any) -> LoggedRequest:
    return LoggedRequest(
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}"))
