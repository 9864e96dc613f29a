"""One error hierarchy, one envelope.

Every error a client can cause is a ``SpindleError`` subclass carrying the HTTP status, the
OpenAI error ``type`` and the offending ``param``; ``spindle.api.errors`` renders them as
``{"error": {"message", "type", "param", "code"}}``. Anything else that escapes a route is our
own bug: it is logged and answered 500, never disguised as a client error.

    SpindleError
    ├── InvalidRequestError      400 invalid_request_error
    │   └── ConflictingRunError  400 (a thread already has an active run)
    ├── AuthenticationError      401
    ├── PermissionDeniedError    403
    ├── NotFoundError            404
    ├── ConflictError            409
    ├── PayloadTooLargeError     413
    ├── UnprocessableError       422
    ├── RateLimitError           429
    └── ServiceUnavailableError  503 server_error (a subsystem of ours failed to start)
"""

from __future__ import annotations


class SpindleError(Exception):
    status_code: int = 400
    error_type: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class InvalidRequestError(SpindleError):
    status_code = 400


class ConflictingRunError(InvalidRequestError):
    pass


class AuthenticationError(SpindleError):
    status_code = 401
    error_type = "invalid_request_error"


class PermissionDeniedError(SpindleError):
    status_code = 403


class NotFoundError(SpindleError):
    status_code = 404

    @classmethod
    def for_object(cls, kind: str, object_id: str, param: str | None = None) -> NotFoundError:
        return cls(f"No {kind} found with id '{object_id}'.", param=param, code=None)


class ConflictError(SpindleError):
    status_code = 409


class PayloadTooLargeError(SpindleError):
    status_code = 413


class UnprocessableError(SpindleError):
    status_code = 422


class RateLimitError(SpindleError):
    status_code = 429
    error_type = "rate_limit_error"


class ServiceUnavailableError(SpindleError):
    """A subsystem of this server failed to start: our problem, not the client's (503)."""

    status_code = 503
    error_type = "server_error"
