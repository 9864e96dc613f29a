"""Helpers every router uses: the request context, JSON bodies, validation, list pages."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from spindle.api.context import RequestContext, api_key_from_headers, shape_from_beta_header
from spindle.api.json_input import parse_json_body
from spindle.errors import InvalidRequestError
from spindle.runtime import Runtime
from spindle.schemas.limits import check_limits
from spindle.store.base import CursorNotFound, ListQuery, Page

M = TypeVar("M", bound=BaseModel)


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


async def request_context(request: Request) -> RequestContext:
    """FastAPI dependency: authenticates the key and works out the API shape."""
    state = request.scope.get("state") or {}
    if "azure_error" in state:
        raise state["azure_error"]
    runtime = runtime_of(request)
    key = api_key_from_headers(request.headers.get("authorization"), request.headers.get("api-key"))
    project = runtime.extensions["keyring"].project_for(key)
    shape = shape_from_beta_header(request.headers.get("openai-beta")) or state.get("azure_shape") or "v2"
    return RequestContext(project=project, shape=shape, azure=bool(state.get("azure")))


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object. Its size is capped while it is read (``limits``); its
    values are checked for invalid Unicode, depth and number size, then for the documented
    field limits of this route, each problem a 400 naming the parameter."""
    raw = await request.body()
    if not raw.strip():
        return {}
    data = parse_json_body(raw)
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    route = request.scope.get("route")
    if route is not None:
        check_limits(request.method, getattr(route, "path", ""), data)
    return data


def validate(model: type[M], data: Any, *, prefix: str = "") -> M:
    """Validate a body; the first problem becomes a 400 naming its parameter."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None


def validation_error(exc: ValidationError, prefix: str = "") -> InvalidRequestError:
    first = exc.errors(include_url=False)[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith("function-")]
    joined = _join_loc(loc)
    param = (prefix + joined if joined else prefix.rstrip(".")) if not joined.startswith("[") else prefix.rstrip(".") + joined
    message = first.get("msg", "Invalid value")
    if first.get("type") == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if first.get("type") == "extra_forbidden":
        return InvalidRequestError(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")
    got = first.get("input")
    shown = json.dumps(got)[:200] if _jsonable(got) else repr(got)[:200]
    return InvalidRequestError(f"Invalid value for '{param}': {message} (got {shown}).", param=param,
                               code="invalid_value")


def _join_loc(loc: list[str]) -> str:
    out = ""
    previous = None
    for part in loc:
        # Discriminated unions repeat the tag ("function", "function"); model-class and
        # union-member labels are pydantic's, not parameter names.
        if part == previous or part[:1].isupper():
            continue
        previous = part
        if part.isdigit():
            out += f"[{part}]"
        elif part in {"str", "int", "float", "bool", "list", "dict"} or "[" in part or part.startswith("tagged-union"):
            continue  # pydantic's union-member labels, not parameter names
        else:
            out += ("." if out else "") + part
    return out


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def page_query(request: Request, kind: str, project: str, parent: str | None = None,
               where: dict[str, Any] | None = None) -> ListQuery:
    """``limit`` (1–100, default 20), ``order`` (asc|desc, default desc), ``after``, ``before``."""
    params = request.query_params
    raw_limit = params.get("limit")
    limit = 20
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise InvalidRequestError(f"Invalid 'limit': expected an integer, got '{raw_limit}'.", param="limit",
                                      code="invalid_value") from None
        if not 1 <= limit <= 100:
            raise InvalidRequestError(f"Invalid 'limit': {limit} is out of range; it must be between 1 and 100.",
                                      param="limit", code="integer_out_of_range")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError(f"Invalid 'order': '{order}'; expected 'asc' or 'desc'.", param="order",
                                  code="invalid_value")
    return ListQuery(kind=kind, project=project, parent=parent, limit=limit, order=order,  # type: ignore[arg-type]
                     after=params.get("after") or None, before=params.get("before") or None, where=where or {})


async def list_page(runtime: Runtime, query: ListQuery) -> Page:
    try:
        return await runtime.store.page(query)
    except CursorNotFound as exc:
        value = query.after if exc.param == "after" else query.before
        raise InvalidRequestError(f"Invalid '{exc.param}': no object with id '{value}' in this list.",
                                  param=exc.param, code="invalid_value") from None


def list_body(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop internal bookkeeping fields (``_``-prefixed) from a stored object."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def paginate_items(request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A list page over a small in-memory collection (oldest first), with the same
    ``limit``/``order``/``after``/``before`` rules as stored lists. Old SDKs page on
    until a page comes back empty, so the cursors must be honoured here too."""
    query = page_query(request, "", "")
    ordered = list(reversed(items)) if query.order == "desc" else list(items)
    ids = [item["id"] for item in ordered]
    start, end = 0, len(ordered)
    for param, cursor in (("after", query.after), ("before", query.before)):
        if cursor is None:
            continue
        if cursor not in ids:
            raise InvalidRequestError(f"Invalid '{param}': no object with id '{cursor}' in this list.",
                                      param=param, code="invalid_value")
        if param == "after":
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    window = ordered[start:end]
    if query.before is not None and query.after is None:
        page = window[-query.limit:]
        return list_body(page, len(window) > query.limit)
    return list_body(window[: query.limit], len(window) > query.limit)
