"""Write ops as a store takes them over: serialized (and snapshotted) on the caller's side,
before the first await, because callers keep changing their dicts after handing them over.
Shared by the SQL stores."""

from __future__ import annotations

import copy
import json
from typing import Any

from spindle.store.base import AppendEvent, Op, Put, Update


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class PreparedPut:
    __slots__ = ("id", "kind", "project", "parent", "created_at", "data", "create_only")

    def __init__(self, op: Put) -> None:
        self.id = op.obj["id"]
        self.kind = op.kind
        self.project = op.project
        self.parent = op.parent
        self.created_at = int(op.obj.get("created_at") or 0)
        self.data = dumps(op.obj)
        self.create_only = op.create_only


def prepare(op: Op) -> Any:
    """A ``PreparedPut`` for a Put, a deep snapshot of an Update, events as JSON text."""
    if isinstance(op, Put):
        return PreparedPut(op)
    if isinstance(op, Update):
        return Update(op.kind, op.id, json.loads(dumps(op.fields)), dict(op.add), copy.deepcopy(op.expect))
    if isinstance(op, AppendEvent) and not isinstance(op.data, str):
        return AppendEvent(op.run_id, op.event, dumps(op.data))
    return op
