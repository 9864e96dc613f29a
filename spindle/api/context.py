"""Who is calling and in which API shape: keys → projects, Azure api-version, v1 vs v2.

Azure clients call ``/openai/...?api-version=...`` (and SDK 1.x with ``azure_deployment``
calls ``/openai/deployments/{name}/...``); Azure AI Foundry Agents clients (``azure-ai-agents``)
call ``/api/projects/{project}/...?api-version=v1``; Azure's v1 API (Responses) is
``/openai/v1/...`` with the api-version optional. ``AzureRoutingMiddleware`` checks the
version (and the project segment against the key's project) and rewrites those paths onto
the ``/v1`` routes, so every route is written once.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from spindle.errors import AuthenticationError, InvalidRequestError, NotFoundError

ApiShape = Literal["v1", "v2"]

# The Assistants API changed shape (v1 → v2) with 2024-05-01-preview.
_V2_SINCE = "2024-05-01"
_FIRST_VERSION = "2024-02-15"
_VERSION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(-preview)?$")
_DEPLOYMENT_RE = re.compile(r"^/openai/deployments/[^/]+(/.*)$")
_PROJECT_RE = re.compile(r"^/api/projects/([^/]+)(/.*)$")
# Undated versions: ``v1`` is what azure-ai-agents sends by default (the Assistants v2 shape).
_UNDATED_V2 = frozenset({"v1"})
# What Azure's /openai/v1 paths accept as api-version (none at all is the usual).
_AZURE_V1_VERSIONS = frozenset({None, "v1", "preview", "latest"})
_AUTH_HEADERS = frozenset({b"authorization", b"api-key"})


@dataclass(frozen=True)
class RequestContext:
    project: str
    shape: ApiShape
    azure: bool


class KeyRing:
    """``SPINDLE_API_KEYS``: ``key`` or ``key:project`` entries. Empty = local mode."""

    def __init__(self, spec: str) -> None:
        self.keys: dict[str, str] = {}
        for entry in (e.strip() for e in spec.split(",")):
            if not entry:
                continue
            key, _, project = entry.partition(":")
            self.keys[key.strip()] = project.strip() or "default"

    @property
    def local_mode(self) -> bool:
        return not self.keys

    def project_for(self, key: str | None) -> str:
        if self.local_mode:
            return "default"
        if not key:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or an 'api-key' header.",
                code="missing_api_key",
            )
        for known, project in self.keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return project
        raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")


def api_key_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    if api_key:
        return api_key.strip()
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def check_azure_version(version: str | None, today: str) -> ApiShape:
    """Validate an Azure ``api-version``; returns the Assistants shape it implies."""
    if not version:
        raise InvalidRequestError(
            "The api-version query parameter (?api-version=) is required for all requests.",
            param="api-version",
            code="MissingApiVersionParameter",
        )
    if version in _UNDATED_V2:
        return "v2"
    match = _VERSION_RE.match(version)
    if not match or not (_FIRST_VERSION <= match.group(1) <= today):
        raise InvalidRequestError(
            f"The api-version '{version}' is invalid. Assistants are served for 2024-02-15-preview, "
            "2024-05-01-preview and later dated versions, and v1.",
            param="api-version",
            code="InvalidApiVersionParameter",
        )
    return "v2" if match.group(1) >= _V2_SINCE else "v1"


def shape_from_beta_header(value: str | None) -> ApiShape | None:
    if value and "assistants=v1" in value.replace(" ", ""):
        return "v1"
    if value and "assistants=v2" in value.replace(" ", ""):
        return "v2"
    return None


def project_segment_error(keyring: KeyRing, headers: list[tuple[bytes, bytes]], segment: str) -> NotFoundError | None:
    """The ``{project}`` of ``/api/projects/{project}/...`` must be the caller's key's project
    (any name in local mode). A missing or wrong key is left to the route's authentication, so
    only a valid key of another project gets this error (and it names only that key's project)."""
    if keyring.local_mode:
        return None
    values: dict[bytes, str] = {}
    for name, value in headers:
        # The first of repeated headers, as the route's own key lookup (Starlette) takes it.
        if name.lower() in _AUTH_HEADERS:
            values.setdefault(name.lower(), value.decode("latin-1"))
    key = api_key_from_headers(values.get(b"authorization"), values.get(b"api-key"))
    try:
        project = keyring.project_for(key)
    except AuthenticationError:
        return None
    if project == segment:
        return None
    shown = segment if len(segment) <= 100 else segment[:100] + "..."  # the URL's length is the client's
    return NotFoundError(
        f"No project '{shown}' for this key; its project is '{project}' "
        f"(use the endpoint .../api/projects/{project}).",
        param="project",
        code="project_not_found",
    )


class AzureRoutingMiddleware:
    """Maps ``/openai/[deployments/{d}/]X?api-version=V`` and ``/api/projects/{p}/X?api-version=V``
    onto ``/v1/X`` and records the Azure shape in ``scope["state"]``; errors in the version or
    the project segment are recorded there too and raised by the route's request context."""

    def __init__(self, app: ASGIApp, today: Callable[[], str]) -> None:
        self.app = app
        self.today = today

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        segment: str | None = None
        azure_v1 = path.startswith("/openai/v1/")
        if azure_v1:
            # Azure's v1 API (``/openai/v1/responses``...): OpenAI's paths, api-version optional.
            rest = path[len("/openai/v1"):]
        elif path.startswith("/openai/"):
            deployment = _DEPLOYMENT_RE.match(path)
            rest = deployment.group(1) if deployment else path[len("/openai"):]
        elif (project := _PROJECT_RE.match(path)) is not None:
            segment, rest = project.group(1), project.group(2)
        else:
            await self.app(scope, receive, send)
            return
        from urllib.parse import parse_qs

        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        version = (query.get("api-version") or [None])[0]
        state = dict(scope.get("state") or {})
        try:
            state["azure_shape"] = "v2" if azure_v1 and version in _AZURE_V1_VERSIONS else \
                check_azure_version(version, self.today())
        except InvalidRequestError as exc:
            state["azure_error"] = exc
        keyring = _keyring_of(scope)
        if segment is not None and keyring is not None and "azure_error" not in state:
            mismatch = project_segment_error(keyring, scope.get("headers") or [], segment)
            if mismatch is not None:
                state["azure_error"] = mismatch
        state["azure"] = True
        scope = dict(scope, path="/v1" + rest, raw_path=("/v1" + rest).encode(), state=state)
        await self.app(scope, receive, send)


def _keyring_of(scope: Scope) -> KeyRing | None:
    # Starlette puts the application in the scope before any middleware runs; the keyring
    # lives on its runtime (absent only before the lifespan has started).
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    keyring = getattr(runtime, "extensions", {}).get("keyring") if runtime is not None else None
    return keyring if isinstance(keyring, KeyRing) else None
