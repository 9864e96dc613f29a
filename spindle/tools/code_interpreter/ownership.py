"""Which process holds a thread's Code Interpreter session, recorded in the store.

A session (a kernel with the thread's variables and /mnt/data) lives in one process's
memory. With several processes on one database, a row per thread says who holds it:

    {"id": "<thread id>:code_interpreter_session", "thread_id": ..., "owner": <process id>,
     "lease_until": <unix time>, "executed": bool}

(object ids are unique across kinds, hence the suffix, as for the thread's active-run marker).

* The run engine prefers the owner when it claims a run of that thread (affinity): the
  owner takes such runs at once, the others leave them queued for a moment first.
* A process starting a session for a thread whose row names *another* owner takes the row
  over. If that session had run code, its state is gone: the model (and the user, in the
  step's output) is told, as OpenAI does when a session expires, and the run's files are
  copied in again from ``tool_resources``.
* The owner renews its leases; a killed owner's rows simply run out. A process that finds
  its row taken over (or deleted with the thread) drops its stale local session, so a later
  call there cannot see old variables.

The row is the authority, not process memory: every move is a conditional write.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from spindle.store.base import Conflict, Delete, MetadataStore, Put, Update

KIND = "code_interpreter_session"


def row_id(thread_id: str) -> str:
    return f"{thread_id}:{KIND}"


log = logging.getLogger(__name__)


class SessionOwnership:
    def __init__(self, store: MetadataStore, owner: str, lease_s: float) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        # session key ("project/thread", or a container's) -> (project, thread or container id)
        # of rows this process holds
        self.held: dict[str, tuple[str, str]] = {}

    def alive_elsewhere(self, row: dict[str, Any] | None) -> bool:
        """A live process other than this one holds the session."""
        return (row is not None and row.get("owner") != self.owner
                and float(row.get("lease_until") or 0) > time.time())

    async def row(self, project: str, thread_id: str) -> dict[str, Any] | None:
        return await self.store.get(KIND, row_id(thread_id), project)

    async def owner_of(self, project: str, thread_id: str) -> str | None:
        """The live owner of the thread's session (None: nobody, or its lease ran out)."""
        row = await self.row(project, thread_id)
        if row is None or float(row.get("lease_until") or 0) <= time.time():
            return None
        return str(row.get("owner"))

    async def take(self, project: str, thread_id: str, key: str | None = None) -> bool:
        """Record this process as the holder of a session it just started for the thread (or
        the container: ``thread_id`` is then the container's id; ``key`` is the session's key
        in the session manager, default ``project/thread``).
        Returns True when a session of this thread elsewhere had run code (its state is lost)."""
        previous = await self.row(project, thread_id)
        lost = previous is not None and previous.get("owner") != self.owner and bool(previous.get("executed"))
        if lost and previous is not None:
            log.info("code_interpreter: thread %s gets a new session here; its session in %s is lost",
                     thread_id, previous.get("owner"))
        row = {"id": row_id(thread_id), "object": KIND, "thread_id": thread_id, "owner": self.owner, "lease_until": time.time() + self.lease_s,
               "executed": False, "taken_at": time.time()}
        await self.store.write([Put(KIND, row, project, parent=thread_id)])
        self.held[key or f"{project}/{thread_id}"] = (project, thread_id)
        return lost

    async def executed(self, project: str, thread_id: str) -> None:
        """The session ran code: losing it now loses state a later run must be told about."""
        try:
            await self.store.write([Update(KIND, row_id(thread_id), fields={"executed": True},
                                           expect={"owner": self.owner})])
        except Conflict:
            pass  # taken over meanwhile: the next call here notices (still_ours)

    async def still_ours(self, project: str, thread_id: str) -> bool:
        """False when another process took the thread's session over (or the thread is gone)."""
        row = await self.row(project, thread_id)
        return row is not None and row.get("owner") == self.owner

    async def renew(self) -> list[str]:
        """Extend every lease held here; returns the keys lost (taken over or deleted)."""
        lost: list[str] = []
        for key, (_project, thread_id) in list(self.held.items()):
            try:
                await self.store.write([Update(KIND, row_id(thread_id), fields={"lease_until": time.time() + self.lease_s},
                                               expect={"owner": self.owner})])
            except Conflict:
                lost.append(key)
                self.held.pop(key, None)
        return lost

    async def let_go(self, key: str) -> None:
        """This process's session of the thread ended (expired, broken): keep the row, so the
        next process still learns the state is gone, but drop the lease (no affinity)."""
        entry = self.held.pop(key, None)
        if entry is None:
            return
        try:
            await self.store.write([Update(KIND, row_id(entry[1]), fields={"lease_until": 0}, expect={"owner": self.owner})])
        except Conflict:
            pass

    async def let_go_all(self) -> None:
        """Shutting down: our sessions die with us; nobody should wait for us to claim."""
        for key in list(self.held):
            await self.let_go(key)

    async def forget(self, project: str, thread_id: str) -> None:
        """The thread was deleted: its row goes with it."""
        self.held.pop(f"{project}/{thread_id}", None)
        await self.store.write([Delete(KIND, row_id(thread_id))])
