"""Storage interfaces: the metadata store (objects and run event logs) and the blob store.

The API, the services and the run engine only see these two small interfaces; the embedded
defaults are ``SQLiteStore`` and ``LocalBlobStore``. A PostgreSQL store or an S3 blob store
implements the same methods and is chosen in ``spindle.store.factory``.

Objects are OpenAI-shaped JSON dicts, stored by ``kind`` (``"assistant"``, ``"message"``...),
``id``, ``project`` (the tenant; every read is scoped by it) and an optional ``parent`` (the
thread of a message or run, the run of a step, the store of a vector store file). Writes are
lists of operations committed atomically, so no request leaves a half-created object.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Put:
    """Insert an object, or replace the data of the object with the same id."""

    kind: str
    obj: dict[str, Any]
    project: str
    parent: str | None = None


@dataclass(frozen=True)
class Delete:
    kind: str
    id: str


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


Op = Put | Delete | DeleteChildren | AppendEvent


@dataclass
class Page:
    items: list[dict[str, Any]]
    has_more: bool


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event: str
    data: str  # JSON text, written to the stream as is


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


class CursorNotFound(Exception):
    """``after``/``before`` names an object that is not in the listed collection."""

    def __init__(self, param: str) -> None:
        super().__init__(param)
        self.param = param


class MetadataStore(abc.ABC):
    """Objects and run event logs. All methods are safe to call concurrently."""

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
        durable and visible to every reader."""

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

    async def put(self, kind: str, obj: dict[str, Any], project: str, parent: str | None = None) -> None:
        await self.write([Put(kind, obj, project, parent)])


class BlobStore(abc.ABC):
    """File bytes by key. Writes are atomic: a failed write leaves nothing behind."""

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
