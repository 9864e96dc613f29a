"""The SQL both relational stores send for listings and scans, written once: each store
gives its dialect (placeholder, how to read a JSON field, how to search the JSON text) and
runs the statements on its own connections.

A page is planned in two steps because a cursor (``after``/``before``) must first be found
in the listed collection: ``PagePlan.cursor_lookups`` are run, their ``seq`` values handed to
``PagePlan.select``, and the rows to ``PagePlan.page``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spindle.store.base import CursorNotFound, ListQuery, Page


@dataclass(frozen=True)
class Dialect:
    param: str  # "?" or "%s"
    # (field name, value) -> (SQL clause, its arguments); value lists mean any-of, None = null/absent
    field_equals: Callable[[str, Any], tuple[str, list[Any]]]
    contains: str  # clause testing that the JSON text contains the argument
    data: str  # the expression selecting an object's JSON text


def checked_field(key: str) -> str:
    # Field names come from our own code, never from requests; refuse anything odd anyway
    # because they become part of the SQL text.
    if not key.replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"bad field name {key!r}")
    return key


@dataclass
class Clauses:
    parts: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, clause: str, *args: Any) -> None:
        self.parts.append(clause)
        self.args.extend(args)

    def sql(self) -> str:
        return " AND ".join(self.parts)


def _filters(d: Dialect, kind: str, *, project: str | None, parent: str | None, where: dict[str, Any],
             mentions: str | None = None) -> Clauses:
    out = Clauses()
    out.add(f"kind = {d.param}", kind)
    if mentions is not None:
        out.add(d.contains, mentions)
    if project is not None:
        out.add(f"project = {d.param}", project)
    if parent is not None:
        out.add(f"parent = {d.param}", parent)
    for key, value in where.items():
        clause, values = d.field_equals(checked_field(key), value)
        out.add(clause, *values)
    return out


def scan_sql(d: Dialect, kind: str, where: dict[str, Any] | None, *, parent: str | None, project: str | None,
             mentions: str | None) -> tuple[str, list[Any]]:
    clauses = _filters(d, kind, project=project, parent=parent, where=where or {}, mentions=mentions)
    return f"SELECT {d.data} FROM objects WHERE {clauses.sql()} ORDER BY seq", clauses.args


class PagePlan:
    def __init__(self, d: Dialect, query: ListQuery) -> None:
        self.d, self.query = d, query
        self.base = _filters(d, query.kind, project=query.project, parent=query.parent, where=query.where)
        self.clauses = Clauses(list(self.base.parts), list(self.base.args))
        self.reverse = False

    def cursor_lookups(self) -> list[tuple[str, str, list[Any]]]:
        """``(param, sql, args)`` finding each cursor's ``seq`` inside the listed collection."""
        out = []
        for param, cursor in (("after", self.query.after), ("before", self.query.before)):
            if cursor is not None:
                out.append((param, f"SELECT seq FROM objects WHERE id = {self.d.param} AND {self.base.sql()}",
                            [cursor, *self.base.args]))
        return out

    def add_cursor(self, param: str, seq: int | None) -> None:
        if seq is None:
            raise CursorNotFound(param)
        descending = self.query.order == "desc"
        # "after" continues in list order; "before" walks back towards the start.
        later = (param == "after") != descending
        self.clauses.add(f"seq > {self.d.param}" if later else f"seq < {self.d.param}", seq)
        if param == "before" and self.query.after is None:
            self.reverse = True

    def select(self) -> tuple[str, list[Any]]:
        walk_desc = (self.query.order == "desc") != self.reverse
        return (f"SELECT {self.d.data} FROM objects WHERE {self.clauses.sql()} ORDER BY seq "
                f"{'DESC' if walk_desc else 'ASC'} LIMIT {self.d.param}", [*self.clauses.args, self.query.limit + 1])

    def page(self, rows: list[tuple[Any, ...]]) -> Page:
        items = [json.loads(r[0]) for r in rows[: self.query.limit]]
        if self.reverse:
            items.reverse()
        return Page(items, len(rows) > self.query.limit)
