"""Edge limits on every HTTP request, before any route runs.

* The body is counted while it is read: a JSON body over ``SPINDLE_MAX_JSON_BODY_BYTES``, or
  an upload (multipart) over ``SPINDLE_MAX_UPLOAD_BYTES`` plus room for the form's framing,
  is refused with 413 as soon as the count passes the limit, so a 100 MB body never sits in
  memory. A declared ``Content-Length`` over the limit is refused before reading anything.
  The connection is closed after that answer: the rest of the body is not worth reading.
* JSON bodies being read (or held by a route) at once are bounded together: past
  ``IN_FLIGHT_BODIES`` times the per-body limit, a request is answered 503 (the SDK retries it)
  instead of growing the server by another 32 MB per connection. Uploads are spooled to disk
  by the form parser and do not count.
* Query parameters must be valid UTF-8 once percent-decoded. Starlette would silently turn
  ``%ED%A0%80`` (an encoded surrogate) into U+FFFD; here it is a 400 naming the parameter.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spindle.api.errors import ServiceUnavailableError
from spindle.api.responses import SafeJSONResponse
from spindle.errors import InvalidRequestError, PayloadTooLargeError, SpindleError

# Boundaries, part headers and the small form fields ('purpose') of one upload.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Real traffic is small bodies; a handful of maximal ones at a time is plenty.
IN_FLIGHT_BODIES = 8


def _mb(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MB"


def body_too_large(limit: int, upload: bool) -> PayloadTooLargeError:
    if upload:
        return PayloadTooLargeError(f"File too large: the maximum file size is {limit // (1024 * 1024)} MB.",
                                    param="file", code="file_too_large")
    return PayloadTooLargeError(f"Request body too large: the maximum for a JSON request is {_mb(limit)}.",
                                code="request_too_large")


def server_busy() -> ServiceUnavailableError:
    return ServiceUnavailableError("The server is busy reading other large requests; retry shortly.",
                                   code="server_busy")


def check_query_string(raw: bytes) -> None:
    """Raise a 400 for the first query parameter whose name or value is not valid UTF-8."""
    for pair in raw.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        try:
            key = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError("A query parameter name is not valid UTF-8.", code="invalid_unicode") from None
        try:
            unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(f"Invalid value for query parameter '{key}': it is not valid UTF-8.",
                                      param=key, code="invalid_unicode") from None


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes
        self.in_flight_budget = max_json_bytes * IN_FLIGHT_BODIES
        self.in_flight = 0  # bytes of JSON bodies received by requests still running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        upload = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        shown = self.max_upload_bytes if upload else self.max_json_bytes
        cap = self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES if upload else self.max_json_bytes
        declared = headers.get(b"content-length", b"")
        try:
            check_query_string(scope.get("query_string") or b"")
            if declared.isdigit() and int(declared) > cap:
                raise body_too_large(shown, upload)
        except SpindleError as exc:
            await _answer(exc, scope, receive, send)
            return

        received = 0
        charged = 0
        tripped = False

        async def counted_receive() -> Message:
            nonlocal received, charged, tripped
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                received += size
                if received > cap:
                    tripped = True
                    raise body_too_large(shown, upload)  # answered by the app's error handlers
                if not upload:
                    charged += size
                    self.in_flight += size
                    if self.in_flight > self.in_flight_budget:
                        tripped = True
                        raise server_busy()
            return message

        async def closing_send(message: Message) -> None:
            if tripped and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted_receive, closing_send)
        finally:
            self.in_flight -= charged


async def _answer(exc: SpindleError, scope: Scope, receive: Receive, send: Send) -> None:
    response = SafeJSONResponse(exc.envelope(), status_code=exc.status_code,
                                headers={"connection": "close"} if exc.status_code == 413 else None)
    await response(scope, receive, send)
