"""The run engine: starts executions, cancels them, resumes them after tool outputs, and
puts every run back on its feet after a restart.

Executions are asyncio tasks in this process, bounded by ``max_concurrent_runs``; their
state is in the store. A run of a thread whose Code Interpreter session another live process
holds is left to that process for a moment (affinity, ``leases.affinity_wait``): the holder
claims queued runs of its threads as soon as it sees them. At start, ``recover`` settles what a crash left behind: queued runs
are started again, runs that were mid-turn are failed with a clear ``last_error`` (their
steps and messages closed), cancelling runs become cancelled. A sweeper expires runs that
waited for tool outputs too long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from spindle.engine import leases, objects, runstate
from spindle.engine.events import done_event, event
from spindle.engine.execution import Execution, RunStopped, execution_for
from spindle.errors import InvalidRequestError, NotFoundError
from spindle.ids import now
from spindle.runtime import Runtime
from spindle.store.base import Conflict, Op, Put, Update

log = logging.getLogger(__name__)

RESTART_ERROR = {
    "code": "server_error",
    "message": "The server restarted (or the server process running this run stopped) while this run was in "
               "progress. The run was stopped; start a new run to continue.",
}


class RunEngine:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(runtime.settings.server.max_concurrent_runs)
        self._sweeper: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._affinity: asyncio.Task[None] | None = None
        self._waiting = 0
        self._not_started: set[str] = set()  # launched here, still waiting for a slot
        self._draining = False
        # Queued runs in the whole store at the last sweep (every process's): /metrics' queue depth.
        self.queued_in_store = 0
        self.owner = leases.process_owner()
        self.lease_s = runtime.settings.server.run_lease_s

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        # Only a store that other processes share can hold runs someone else is executing.
        await self.recover(trust_leases=self.store.shared)
        await self.run_sweepers()
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self._heartbeat = asyncio.create_task(self._renew_forever())
        if self.store.shared:
            self._affinity = asyncio.create_task(self._claim_own_threads_forever())

    @property
    def draining(self) -> bool:
        return self._draining

    def begin_drain(self) -> None:
        """Claim nothing new from now on (a SIGTERM arrived); what executes here goes on."""
        self._draining = True

    async def stop(self, drain_s: float = 0.0) -> None:
        """Drain, then stop: nothing new is claimed or launched here; runs executing get up to
        ``drain_s`` to finish (their leases are still renewed); runs still waiting for a slot
        are left queued for another process (or this one's next start) to claim. What is
        still executing after that is stopped without writing anything: it stays in_progress
        and is settled like after a crash (by another process once its lease runs out, or at
        the next start)."""
        self._draining = True
        for loop in (self._sweeper, self._affinity):
            if loop:
                loop.cancel()
        running = [t for run_id, t in self._tasks.items() if run_id not in self._not_started]
        if running and drain_s > 0:
            log.info("draining: waiting up to %g s for %d run(s) to finish", drain_s, len(running))
            await asyncio.wait(running, timeout=drain_s)
        if self._heartbeat:
            self._heartbeat.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def counts(self) -> dict[str, int]:
        """Runs this process holds: executing, and waiting for a slot (``max_concurrent_runs``)."""
        return {"executing": len(self._tasks) - self._waiting, "waiting": self._waiting}

    def launch(self, run: dict[str, Any], project: str) -> None:
        run_id = run["id"]
        if run_id in self._tasks or self._draining:
            return  # draining: it stays queued in the store for another process to claim
        task = asyncio.create_task(self._execute(run, project), name=f"run:{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))

    async def _execute(self, run: dict[str, Any], project: str) -> None:
        self._waiting += 1
        self._not_started.add(run["id"])
        try:
            if await self._left_to_session_owner(run, project):
                return
            await self._limit.acquire()
        except asyncio.CancelledError:  # cancelled while waiting for a slot (or a shutdown)
            await asyncio.shield(self._finish_cancel(run["id"], project))
            raise
        finally:
            self._waiting -= 1
            self._not_started.discard(run["id"])
        if self._draining:
            self._limit.release()
            return  # not claimed: another process (or the next start) takes it
        try:
            fresh = await self.store.get("run", run["id"], project)
            if fresh is not None and fresh["status"] == "cancelling":
                await self._finish_cancel(run["id"], project)
            elif fresh is not None and fresh["status"] == "queued":
                await execution_for(fresh)(self.runtime, fresh, project).execute()
        finally:
            self._limit.release()

    async def _left_to_session_owner(self, run: dict[str, Any], project: str) -> bool:
        """True when the process holding the thread's Code Interpreter session took the run
        (we waited for it to); False: run it here."""
        sessions = self.runtime.extensions.get("code_interpreter_sessions")
        if sessions is None or not self.store.shared or not leases.uses_code_interpreter(run):
            return False
        try:
            if not sessions.alive_elsewhere(await sessions.row(project, leases.session_subject(run))):
                return False
            deadline = time.monotonic() + leases.affinity_wait(self.lease_s)
            while time.monotonic() < deadline:
                await asyncio.sleep(leases.AFFINITY_POLL_S)
                fresh = await self.store.get("run", run["id"], project)
                if fresh is None or fresh["status"] != "queued":
                    return True  # claimed by the owner (or cancelled, deleted): not ours
        except Exception:  # affinity is an optimisation: never a reason not to run
            log.exception("checking the session owner of run %s failed", run["id"])
        return False

    async def _claim_own_threads_forever(self) -> None:
        """Claim queued runs of threads whose Code Interpreter session lives here, at once
        (the process that queued them waits for us, see ``_left_to_session_owner``).

        One small indexed query per held thread (runs by parent) per round, at most
        ``AFFINITY_QUERIES_PER_S`` a second: with many sessions held, rounds get slower
        (still well inside the others' wait) instead of loading the database."""
        while True:
            sessions = self.runtime.extensions.get("code_interpreter_sessions")
            held = list(getattr(sessions, "held", {}).values())
            await asyncio.sleep(max(leases.AFFINITY_POLL_S, len(held) / leases.AFFINITY_QUERIES_PER_S))
            if self._draining:
                continue
            for project, subject in held:
                try:
                    # A thread's runs are its children; a container's runs name it (responses).
                    if subject.startswith("thread_"):
                        queued = await self.store.scan("run", {"status": "queued"}, parent=subject)
                    else:
                        queued = await self.store.scan("run", {"status": "queued", leases.SESSION: subject})
                    for run in queued:
                        if run["id"] not in self._tasks:
                            self.launch(run, project)
                except Exception:
                    log.exception("claiming runs of %s (its session is here) failed", subject)

    async def _finish_cancel(self, run_id: str, project: str) -> None:
        fresh = await self.store.get("run", run_id, project)
        if fresh is None or fresh["status"] != "cancelling":
            return
        try:
            await Execution(self.runtime, fresh, project).cancelled()
        except Conflict:
            pass  # another writer finished it

    # -- client actions --------------------------------------------------------------------

    async def cancel(self, project: str, run: dict[str, Any]) -> dict[str, Any]:
        while True:
            if run["status"] not in objects.ACTIVE_RUN_STATUSES or run["status"] == "cancelling":
                raise InvalidRequestError(f"Cannot cancel run with status '{run['status']}'.", param="run_id")
            expected = run["status"]
            objects.set_run_status(run, "cancelling")
            try:
                await self.store.write([runstate.run_update(run, expected), event("thread.run.cancelling", run)])
                break
            except Conflict:  # its status moved meanwhile: decide again on the new one
                fresh = await self.store.get("run", run["id"], project)
                if fresh is None:
                    raise NotFoundError(f"No run found with id '{run['id']}'.", param="run_id") from None
                run = fresh
        task = self._tasks.get(run["id"])
        if task is not None and not task.done():
            task.cancel()  # the execution (or its wait for a slot) writes "cancelled"
            return run
        if run.get(leases.OWNER) not in (None, self.owner) and leases.lease_alive(run):
            return run  # another process executes it: its lease renewal sees the cancel
        await self._finish_cancel(run["id"], project)
        return run

    async def submit_tool_outputs(self, project: str, run: dict[str, Any], outputs: list[dict[str, Any]]) -> int:
        """Record the outputs, queue the run again; returns the event seq to stream from."""
        if run["status"] != "requires_action" or not run.get("required_action"):
            raise InvalidRequestError(
                f"Runs in status \"{run['status']}\" do not accept tool outputs.", param="run_id")
        expected = {c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]}
        given: dict[str, str] = {}
        for i, item in enumerate(outputs):
            call_id = item.get("tool_call_id")
            if call_id not in expected:
                raise InvalidRequestError(f"Invalid tool_call_id: '{call_id}' is not a pending tool call of this run.",
                                          param=f"tool_outputs[{i}].tool_call_id", code="invalid_value")
            if call_id in given:
                raise InvalidRequestError(f"Duplicate tool output for '{call_id}'.",
                                          param=f"tool_outputs[{i}].tool_call_id", code="invalid_value")
            given[str(call_id)] = str(item.get("output") or "")
        missing = expected - given.keys()
        if missing:
            raise InvalidRequestError(f"Expected tool outputs for call_ids {sorted(expected)}, got {sorted(given)}.",
                                      param="tool_outputs", code="invalid_value")
        seq = await self.store.last_event_seq(run["id"])
        ops: list[Op] = []
        for step in await self.store.scan("run_step", {"status": "in_progress"}, parent=run["id"]):
            if step["step_details"]["type"] != "tool_calls":
                continue
            for call in step["step_details"]["tool_calls"]:
                if call["type"] == "function" and call["id"] in given:
                    call["function"]["output"] = given[call["id"]]
            objects.finish_step(step, "completed")
            ops += [Put("run_step", step, project, parent=run["id"]), event("thread.run.step.completed", step)]
        run["required_action"] = None
        run["expires_at"] = run["created_at"] + objects.RUN_EXPIRY_S if run["created_at"] + objects.RUN_EXPIRY_S > now() \
            else now() + objects.RUN_EXPIRY_S
        objects.set_run_status(run, "queued")
        try:
            # Compare-and-set on requires_action: of racing submits exactly one lands; the
            # others' steps and events are undone with them.
            await self.store.write([runstate.run_update(run, "requires_action"), event("thread.run.queued", run),
                                    *ops])
        except Conflict:
            fresh = await self.store.get("run", run["id"], project)
            status = fresh["status"] if fresh else "deleted"
            raise InvalidRequestError(f"Runs in status \"{status}\" do not accept tool outputs.",
                                      param="run_id") from None
        self.launch(run, project)
        return seq

    async def abandon(self, run_id: str) -> None:
        """Stop an execution without writing anything (its thread is being deleted)."""
        task = self._tasks.pop(run_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- restart and expiry ------------------------------------------------------------------

    async def recover(self, trust_leases: bool = True) -> None:
        """Settle runs no live process is executing: claim queued ones, fail mid-turn ones,
        finish cancels. ``trust_leases=False`` (start-up with a store of our own): every
        active run found belongs to a process that is gone."""
        active = await self.store.scan("run", {"status": ["queued", "in_progress", "cancelling"]})
        self.queued_in_store = sum(1 for run in active if run["status"] == "queued")
        if self._draining:
            return  # leaving: the others settle what is orphaned
        for run in active:
            if run["id"] in self._tasks:
                continue  # ours, and running
            if trust_leases and leases.lease_alive(run):
                continue  # another live process has it
            if trust_leases and run["status"] == "queued" and leases.queued_for(run) < self.lease_s / 3:
                continue  # just queued: the process that queued it is about to claim it
            project = await self._project_of(run)
            if project is None:
                continue
            if run["status"] == "queued":
                self.launch(run, project)
                continue
            execution = Execution(self.runtime, run, project)
            try:
                if run["status"] == "cancelling":
                    await execution.cancelled()
                else:
                    log.warning("run %s was in progress in a process that stopped (%s); marking it failed",
                                run["id"], run.get(leases.OWNER) or "an earlier start")
                    await self._rebuild_messages(run, project)
                    await execution.stop(RunStopped("failed", RESTART_ERROR))
            except Conflict:
                continue  # another process settled it first

    async def _project_of(self, run: dict[str, Any]) -> str | None:
        found = await self.store.locate("run", run["id"])
        return found[0] if found else None

    async def _rebuild_messages(self, run: dict[str, Any], project: str) -> None:
        """Text streamed before the crash is in the event log even if the message object was
        last saved earlier: put it back into the message, so nothing the user saw is lost."""
        texts: dict[str, dict[int, str]] = {}
        after = 0
        while batch := await self.store.read_events(run["id"], after):
            for item in batch:
                after = item.seq
                if item.event != "thread.message.delta":
                    continue
                data = json.loads(item.data)
                for part in data["delta"].get("content") or []:
                    if part.get("type") == "text":
                        per = texts.setdefault(data["id"], {})
                        per[part["index"]] = per.get(part["index"], "") + part["text"].get("value", "")
        for message_id, parts in texts.items():
            message = await self.store.get("message", message_id, project)
            if message is None or message.get("status") != "in_progress":
                continue
            for index, value in parts.items():
                while len(message["content"]) <= index:
                    message["content"].append({"type": "text", "text": {"value": "", "annotations": []}})
                if message["content"][index]["type"] == "text" and len(message["content"][index]["text"]["value"]) < len(value):
                    message["content"][index]["text"]["value"] = value
            try:
                # Only the content, and only while the message is still open: another process
                # settling the same run may have closed it since we read it (its status and
                # incomplete_details must not be put back to in_progress).
                await self.store.write([Update("message", message_id, fields={"content": message["content"]},
                                               expect={"status": "in_progress"})])
            except Conflict:
                continue

    async def expire_waiting(self) -> None:
        for run in await self.store.scan("run", {"status": "requires_action"}):
            if run.get("expires_at") and run["expires_at"] <= now():
                project = await self._project_of(run)
                if project is None:
                    continue
                ops: list[Op] = []
                for step in await self.store.scan("run_step", {"status": "in_progress"}, parent=run["id"]):
                    objects.finish_step(step, "expired")
                    ops += [Put("run_step", step, project, parent=run["id"]), event("thread.run.step.expired", step)]
                objects.set_run_status(run, "expired")
                try:
                    await self.store.write([*ops, runstate.run_update(run, "requires_action"),
                                            event("thread.run.expired", run), runstate.release_thread(run),
                                            done_event(run["id"])])
                except Conflict:
                    continue  # tool outputs (or a cancel) arrived first

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.expire_waiting()
                await self.recover(trust_leases=True)
            except Exception:
                log.exception("run sweep failed")
            await self.run_sweepers()

    async def run_sweepers(self) -> None:
        """Sweeps of other parts on the same beat, after recovery (``extensions["sweepers"]``:
        e.g. purging store=false responses whose answering process died)."""
        for sweeper in self.runtime.extensions.get("sweepers", []):
            try:
                await sweeper()
            except Exception:
                log.exception("sweep %s failed", getattr(sweeper, "__qualname__", sweeper))

    async def _renew_forever(self) -> None:
        """Renew the lease of every run this process executes; a run cancelled through
        another process is cancelled here (its status no longer matches)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            for run_id, task in list(self._tasks.items()):
                try:
                    await self.store.write([Update("run", run_id, fields={leases.LEASE_UNTIL: time.time() + self.lease_s},
                                                   expect={leases.OWNER: self.owner, "status": "in_progress"})])
                except Conflict:
                    fresh = await self.store.get("run", run_id, None)
                    if fresh is not None and fresh["status"] == "cancelling" and fresh.get(leases.OWNER) == self.owner:
                        task.cancel()  # the execution settles the cancel
                except Exception:
                    log.exception("renewing the lease of run %s failed", run_id)
