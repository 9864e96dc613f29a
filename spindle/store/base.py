"""Storage interfaces: the metadata store (objects and run event logs) and the blob store.

The API, the services and the run engine only see these two small interfaces; the embedded
defaults are ``SQLiteStore`` and ``LocalBlobStore``. A PostgreSQL store or an S3 blob store
implements the same methods and is chosen in ``spindle.store.factory``.

Objects are OpenAI-shaped JSON dicts, stored by ``kind`` (``"assistant"``, ``"message"``...),
``id``, ``project`` (the tenant; every read is scoped by it) and an optional ``parent`` (the
thread of a message or run, the run of a step, the store of a vector store file). Writes are
lists of operations committed atomically, so no request leaves a half-created object.

The store also holds the invariants that concurrent requests (and, later, several processes)
must not break: ``Update`` changes fields of the stored object inside the transaction, so two
writers of different fields never lose each other's change, and its ``expect`` is a
compare-and-set (a run's status moves once; of N racing ``submit_tool_outputs`` exactly one
wins). ``Put(create_only=True)`` and ``Delete(when=...)`` are the conditional forms of the
other two. A failed condition raises ``Conflict`` and the whole write is undone.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class AnyOf:
    """In ``expect`` / ``when``: the stored field equals one of ``values``."""

    values: tuple[Any, ...]


class _Missing:
    """A field that the stored object does not have at all (``expect={"x": MISSING}``)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __deepcopy__(self, _memo: dict[int, Any]) -> _Missing:
        return self  # one sentinel: compared by identity


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Put:
    """Insert an object, or replace the data of the object with the same id. With
    ``create_only`` an existing object of that id is a ``Conflict`` instead."""

    kind: str
    obj: dict[str, Any]
    project: str
    parent: str | None = None
    create_only: bool = False


@dataclass(frozen=True)
class Update:
    """Change top-level fields of a stored object in place, inside the transaction.

    ``fields`` replace the stored values (other fields are kept as stored, so a concurrent
    update of another field is never lost); ``add`` increments integer counters at dotted
    paths (``"file_counts.completed": 1``). With ``expect`` the write fails with ``Conflict``
    unless each named field of the stored object equals the value (or is in an ``AnyOf``);
    a missing object is a ``Conflict`` too."""

    kind: str
    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    add: dict[str, int] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delete:
    """Delete an object (deleting a missing one is not an error). With ``when``, only if each
    named field of the stored object matches, as in ``Update.expect``; otherwise nothing."""

    kind: str
    id: str
    when: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeleteChildren:
    """Delete every object of ``kind`` under ``parent`` (e.g. a thread's messages)."""

    kind: str
    parent: str


@dataclass(frozen=True)
class AppendEvent:
    """Append one stream event to a run's event log; its sequence number is returned."""

    run_id: str
    event: str
    data: dict[str, Any] | str


Op = Put | Update | Delete | DeleteChildren | AppendEvent


@dataclass
class Page:
    items: list[dict[str, Any]]
    has_more: bool


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event: str
    data: str  # JSON text, written to the stream as is


@dataclass(frozen=True)
class StoredObject:
    """One object with its scoping columns, as ``dump`` yields them (for copying a store)."""

    seq: int
    kind: str
    project: str
    parent: str | None
    obj: dict[str, Any]


@dataclass
class ListQuery:
    kind: str
    project: str
    parent: str | None = None
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None
    # Equality filters on top-level JSON fields of the object, e.g. {"purpose": "assistants"}.
    where: dict[str, Any] = field(default_factory=dict)


class Conflict(Exception):
    """A conditional write found the stored object not as expected; nothing was written."""

    def __init__(self, kind: str, object_id: str, reason: str) -> None:
        super().__init__(f"{kind} {object_id}: {reason}")
        self.kind = kind
        self.object_id = object_id
        self.reason = reason


def matches(obj: dict[str, Any] | None, expect: dict[str, Any]) -> str | None:
    """``None`` when ``obj`` satisfies ``expect``, else why not (shared by every backend)."""
    if obj is None:
        return "it does not exist"
    for key, wanted in expect.items():
        have = obj.get(key, MISSING)
        ok = have in wanted.values if isinstance(wanted, AnyOf) else have == wanted
        if not ok:
            return f"{key} is {have!r}, expected {wanted!r}"
    return None


def apply_update(obj: dict[str, Any], update: Update) -> dict[str, Any]:
    """The stored object after ``update`` (checked with ``matches`` first); a new dict."""
    out = dict(obj, **update.fields)
    for path, delta in update.add.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[leaf] = int(node.get(leaf) or 0) + int(delta)
    return out


def diff_update(kind: str, before: dict[str, Any], after: dict[str, Any], *, cas: Sequence[str] = ()) -> Update:
    """An ``Update`` with the top-level fields that differ between two versions of an object
    (``after`` must be a copy, not ``before`` changed in place). Fields named in ``cas`` must
    still hold their ``before`` value when the write lands: use it for fields whose new value
    was computed from the old one (a merged list), and retry on ``Conflict``."""
    fields = {k: v for k, v in after.items() if before.get(k, MISSING) != v}
    return Update(kind, after["id"], fields=fields, expect={k: before.get(k, MISSING) for k in cas})


async def retry_on_conflict(action: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
    """Run a read-compute-conditional-write ``action`` again when another writer got there
    first; the last ``Conflict`` propagates (a 500: contention this high is our problem)."""
    for attempt in range(attempts):
        try:
            return await action()
        except Conflict:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class CursorNotFound(Exception):
    """``after``/``before`` names an object that is not in the listed collection."""

    def __init__(self, param: str) -> None:
        super().__init__(param)
        self.param = param


class MetadataStore(abc.ABC):
    """Objects and run event logs. All methods are safe to call concurrently."""

    # True when several Spindle processes may use the same store at once (PostgreSQL): then
    # a run another process claimed is left alone until its lease runs out (engine.leases).
    shared: bool = False

    # Set by the app to the event log's ``notify``: called on the event loop after each
    # commit with the events it appended, by run, so live streams in this process get them
    # without reading them back.
    on_commit: Callable[[dict[str, list[StoredEvent]]], None] | None = None
    # Set by the app to the event log's ``poke``: called with the ids of runs whose logs
    # another process appended to, by stores that several processes share and that can tell
    # (PostgreSQL: LISTEN/NOTIFY); followers then read the new events from the store. Where
    # a store cannot tell, followers poll ``read_events``.
    on_remote_commit: Callable[[set[str]], None] | None = None

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply schema migrations. Called once at start."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    @abc.abstractmethod
    async def write(self, ops: Sequence[Op]) -> list[int | None]:
        """Apply ``ops`` in one transaction (all or nothing). Returns, per op, the sequence
        number for ``AppendEvent`` and ``None`` otherwise. When it returns, the write is
        durable and visible to every reader. Raises ``Conflict`` (having written nothing)
        when a condition of ``Put``/``Update`` does not hold."""

    @abc.abstractmethod
    async def get(self, kind: str, object_id: str, project: str | None) -> dict[str, Any] | None:
        """The object, or ``None`` when missing or owned by another project
        (``project=None`` reads across projects: only for internal maintenance)."""

    @abc.abstractmethod
    async def locate(self, kind: str, object_id: str) -> tuple[str, str | None] | None:
        """``(project, parent)`` of an object, for internal maintenance (recovery, sweeps)."""

    @abc.abstractmethod
    async def page(self, query: ListQuery) -> Page:
        """One page in creation order; raises ``CursorNotFound`` for a foreign cursor."""

    @abc.abstractmethod
    async def scan(self, kind: str, where: dict[str, Any] | None = None, *, parent: str | None = None,
                   project: str | None = None, mentions: str | None = None) -> list[dict[str, Any]]:
        """Every object of ``kind`` matching ``where`` (values may be lists: any-of) and, with
        ``mentions``, whose JSON contains that text anywhere (e.g. an id), oldest first.
        For maintenance and small collections, not for API listings."""

    @abc.abstractmethod
    async def read_events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events of a run's log with ``seq > after_seq``, in order."""

    @abc.abstractmethod
    async def last_event_seq(self, run_id: str) -> int:
        """The highest sequence number in a run's log (0 when empty)."""

    @abc.abstractmethod
    async def dump(self, after_seq: int = 0, limit: int = 1000) -> list[StoredObject]:
        """Every object of every kind and project in insertion order, a page at a time (for
        ``spindle migrate``; not for serving requests)."""

    @abc.abstractmethod
    async def event_runs(self) -> list[str]:
        """The ids of all runs that have events (for ``spindle migrate``)."""

    async def put(self, kind: str, obj: dict[str, Any], project: str, parent: str | None = None) -> None:
        await self.write([Put(kind, obj, project, parent)])


class BlobStore(abc.ABC):
    """File bytes by key. Writes are atomic: a failed write leaves nothing behind. Reading a
    key that is not there raises ``FileNotFoundError``."""

    def open_sync(self) -> None:
        """Prepare (directories, connection checks); called once at start."""

    def ready(self) -> None:
        """Raise when the bytes cannot be reached right now (for /readyz; blocking)."""

    @abc.abstractmethod
    async def put_file(self, key: str, source: Path) -> None:
        """Store the bytes of a local file under ``key`` (the source may be moved)."""

    @abc.abstractmethod
    async def put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def read(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    async def local_path(self, key: str) -> Path:
        """A local path with the bytes (a cache copy for remote stores), for parsers."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def staging_dir(self) -> Path:
        """Where uploads are spooled before ``put_file``; on the same filesystem when local."""
