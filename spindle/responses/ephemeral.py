"""``store: false`` responses: nothing is kept once the answer is out, also after a crash.

The process whose request created such a response answers it and then purges it (the route's
``forget``). If that process dies first (``kill -9`` mid-run, or between the end of the run and
the purge), the rows would stay behind, hidden, for ever. So the response is written together
with a *purge marker* (kind ``response_purge``, same transaction) naming the answering process
and a lease on the answer, which that process renews while it answers. The run sweep of any
process (``RunEngine.run_sweepers``) purges a response whose marker's answerer is gone — its
lease ran out, or its pid no longer exists on this machine — once recovery has settled the run
(an orphaned run is failed first, as any run is). The purge deletes the marker in the same
write, so it happens once, whichever process does it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from spindle.engine import leases
from spindle.engine.objects import TERMINAL_RUN_STATUSES
from spindle.runtime import Runtime
from spindle.store.base import Conflict, Delete, Put, Update

log = logging.getLogger(__name__)

KIND = "response_purge"
# Renewed for at most this long after the response was created: a stream whose generator
# never started (client gone before the first byte) runs no ``finally``, and must not keep
# its response alive for ever; no real answer takes an hour.
MAX_ANSWER_S = 3600.0
# A response's run in these is settled for the Responses API (function calls complete it).
_SETTLED = (*TERMINAL_RUN_STATUSES, "requires_action")


def marker_id(response_id: str) -> str:
    return f"purge_{response_id}"


class EphemeralResponses:
    """The purge markers of ``store: false`` responses and their sweep."""

    def __init__(self, runtime: Runtime, purge: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self._purge = purge
        self.owner = leases.process_owner()
        self._answering: set[str] = set()  # response ids this process is answering

    @property
    def lease_s(self) -> float:
        return self.runtime.settings.server.run_lease_s

    def marker(self, response_id: str, project: str) -> Put:
        """The marker to write with the response (then ``answering``)."""
        stamp = time.time()
        return Put(KIND, {"id": marker_id(response_id), "object": KIND, "response_id": response_id,
                          "answerer": self.owner, "created": stamp, "answer_until": stamp + self.lease_s},
                   project)

    def answering(self, response_id: str) -> None:
        """This process answers the response (its marker is written): renew its lease."""
        self._answering.add(response_id)

    def delete_op(self, response_id: str) -> Delete:
        """Part of the purge's write; this process no longer answers the response."""
        self._answering.discard(response_id)
        return Delete(KIND, marker_id(response_id))

    def abandon(self, response_id: str) -> None:
        """Stop answering here without purging, as a process that died would (tests)."""
        self._answering.discard(response_id)

    async def sweep(self) -> None:
        """Renew the answers this process gives; purge settled responses whose answerer is gone."""
        now = time.time()
        for marker in await self.store.scan(KIND):
            response_id = str(marker["response_id"])
            if marker.get("answerer") == self.owner and response_id in self._answering:
                if now - float(marker.get("created") or 0) > MAX_ANSWER_S:
                    self._answering.discard(response_id)  # not renewed: the lease runs out
                    continue
                try:
                    await self.store.write([Update(KIND, marker["id"], fields={"answer_until": now + self.lease_s},
                                                   expect={"answerer": self.owner})])
                except Conflict:
                    pass  # purged meanwhile
                continue
            if float(marker.get("answer_until") or 0) > now and not leases.owner_gone(marker.get("answerer")):
                continue  # its answerer is alive and still answering
            await self._purge_orphan(marker, response_id)

    async def _purge_orphan(self, marker: dict[str, Any], response_id: str) -> None:
        found = await self.store.locate("run", response_id)
        run = await self.store.get("run", response_id, found[0]) if found else None
        if run is None:
            await self.store.write([Delete(KIND, marker["id"])])
            return
        if run["status"] not in _SETTLED:
            return  # recovery settles it first (its executing process may still be alive)
        log.info("response %s (store=false) was left behind by a process that stopped; purging it", response_id)
        await self._purge(run)
