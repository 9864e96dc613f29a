"""One sandbox session per thread, a pool of ready sessions, lifetimes and capacity.

The manager is the only owner of sessions. A caller asks for the session of a key (one key
per thread: ``project/thread_id``) with ``lease(key)``, which hands it out locked so two runs
of one thread never interleave code. A new key gets a session from the pool of pre-started
ones (refilled in the background) or, when the pool is empty, a freshly started one.

A thread's session ends ``session_lifetime_s`` after it was assigned or ``idle_timeout_s``
after its last use, whichever comes first (never in the middle of a call); the next lease for
that thread gets a new session and ``Lease.reset`` tells the caller the state was lost. When
the sandbox cannot be built, ``start`` records why and every lease raises
``SandboxUnavailable`` with that reason: code is never run unsandboxed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from spindle.sandbox.errors import SandboxCapacityError, SandboxError, SandboxUnavailable
from spindle.sandbox.provider import ExecutionResult, OutputCallback, SandboxProvider, SandboxSession
from spindle.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

_ENDED_MEMORY = 10_000  # how many ended threads we remember (to tell them "state was reset")


@dataclass
class ThreadSession:
    """The session of one thread plus what the tool tracks about its /mnt/data."""

    key: str
    session: SandboxSession
    assigned_at: float
    last_used: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    executions: int = 0
    # file id -> (path under /mnt/data, original filename), for files copied in (once each)
    input_files: dict[str, tuple[str, str]] = field(default_factory=dict)
    # path under /mnt/data -> id of the File made from it, for files the code wrote
    output_files: dict[str, str] = field(default_factory=dict)


@dataclass
class Lease:
    thread: ThreadSession
    # True when this thread had a session that ran code and has ended since (expired, idle):
    # the model must be told its variables and files are gone.
    reset: bool

    @property
    def session(self) -> SandboxSession:
        return self.thread.session

    async def execute(
        self, code: str, *, timeout: float, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        """Run code in the leased session, counting it (an ended session that ran code is a reset)."""
        self.thread.executions += 1
        return await self.thread.session.execute(code, timeout=timeout, on_output=on_output)


class SessionManager:
    def __init__(self, provider: SandboxProvider, settings: SandboxSettings) -> None:
        self.provider = provider
        self.settings = settings
        self.unavailable_reason: str | None = None
        self._threads: dict[str, ThreadSession] = {}
        self._ended: OrderedDict[str, bool] = OrderedDict()
        # Weak: a key's lock lives while someone holds or waits for it, not for every thread ever seen.
        self._key_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._pool: list[SandboxSession] = []
        self._starting = 0
        self._closing = 0  # ended sessions whose close() has not returned: still alive
        self._need_fill = asyncio.Event()
        self._pool_starting = 0  # of ``_starting``: the ones the pool filler started
        self._pool_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._startup: asyncio.Task[None] | None = None
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start checking the host and filling the pool, in the background. Never raises: an
        unusable sandbox is recorded (and logged as an error) so that the server still serves
        everything else, and every lease then fails with the reason."""
        if self._started:
            return
        self._started = True
        if not self.settings.enabled:
            self.unavailable_reason = (
                "code execution is disabled on this server (SPINDLE_SANDBOX_ENABLED=false)"
            )
            return
        self._startup = asyncio.create_task(self._start_provider())

    async def _start_provider(self) -> None:
        try:
            await self.provider.start()
        except SandboxUnavailable as exc:
            self.unavailable_reason = f"the code sandbox is not available on this server: {exc}"
        except Exception as exc:  # a bug or an unexpected host state: still never run unsandboxed
            log.exception("sandbox provider failed to start")
            self.unavailable_reason = f"the code sandbox failed to start: {exc!r}"
        if self.unavailable_reason is not None:
            log.error("%s. Code Interpreter calls will fail until this is fixed.", self.unavailable_reason)
            return
        self._tasks = [asyncio.create_task(self._fill_pool()), asyncio.create_task(self._reap())]
        self._need_fill.set()

    async def shutdown(self) -> None:
        tasks = [*self._tasks, *([self._startup] if self._startup is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        sessions = [*self._pool, *(t.session for t in self._threads.values())]
        self._pool.clear()
        self._threads.clear()
        await asyncio.gather(*(s.close() for s in sessions))
        if self._startup is not None:
            self._startup = None
            await self.provider.shutdown()
        self._started = False

    async def ready(self) -> None:
        """Wait for the provider's start; raise ``SandboxUnavailable`` if code cannot run."""
        if not self._started:
            raise SandboxUnavailable("the code sandbox has not been started")
        if self._startup is not None and not self._startup.done():
            await asyncio.shield(self._startup)
        if self.unavailable_reason is not None:
            raise SandboxUnavailable(self.unavailable_reason)

    # -- leases ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, key: str) -> AsyncIterator[Lease]:
        """The session of ``key``, locked for the duration of the ``async with`` block."""
        lease = await self._acquire_locked(key)
        try:
            yield lease
        finally:
            lease.thread.last_used = time.monotonic()
            lease.thread.lock.release()

    async def _acquire_locked(self, key: str) -> Lease:
        await self.ready()
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        async with lock:
            reset = False
            while True:
                ts = self._threads.get(key)
                if ts is None:
                    session = await self._take_session()
                    now = time.monotonic()
                    ts = ThreadSession(key, session, now, now)
                    self._threads[key] = ts
                    reset = self._ended.pop(key, False) or reset
                await ts.lock.acquire()
                if self._threads.get(key) is not ts:  # ended while we waited for its lock
                    ts.lock.release()
                    continue
                if self._expired(ts):  # never while a call runs: we hold its lock here
                    await self._end(key, ts, remember=True)
                    ts.lock.release()
                    continue
                ts.last_used = time.monotonic()
                return Lease(ts, reset)

    async def discard(self, key: str) -> None:
        """End the session of ``key`` because it is broken; the next lease starts a new one."""
        ts = self._threads.get(key)
        if ts is not None:
            await self._end(key, ts, remember=True)

    async def release(self, key: str) -> None:
        """Close the session of ``key`` now (thread deleted). Idempotent."""
        self._ended.pop(key, None)
        ts = self._threads.pop(key, None)
        if ts is not None:
            await self._close(ts.session)

    def thread_session(self, key: str) -> ThreadSession | None:
        return self._threads.get(key)

    def _expired(self, ts: ThreadSession) -> bool:
        now = time.monotonic()
        return (
            now - ts.assigned_at > self.settings.session_lifetime_s
            or now - ts.last_used > self.settings.idle_timeout_s
        )

    async def _end(self, key: str, ts: ThreadSession, *, remember: bool) -> None:
        if self._threads.get(key) is ts:
            del self._threads[key]
        if remember and ts.executions > 0:
            self._ended[key] = True
            while len(self._ended) > _ENDED_MEMORY:
                self._ended.popitem(last=False)
        await self._close(ts.session)
        self._need_fill.set()

    async def _close(self, session: SandboxSession) -> None:
        """Close a session that is no longer in ``_threads`` or ``_pool``; it counts against
        the cap until its processes are gone."""
        self._closing += 1
        try:
            await session.close()
        finally:
            self._closing -= 1
            # A slot is free: the pool may have stopped short at the cap during a burst.
            self._need_fill.set()

    def stats(self) -> dict[str, int]:
        """Session counts, for /healthz and operators."""
        return {"assigned": len(self._threads), "pooled": len(self._pool), "starting": self._starting,
                "closing": self._closing, "pool_size": self.settings.pool_size, "max": self.settings.max_sessions}

    def _total(self) -> int:
        """Sessions that exist: assigned, pooled, starting, or still closing."""
        return len(self._threads) + len(self._pool) + self._starting + self._closing

    async def _take_session(self) -> SandboxSession:
        # Every await below lets other leases and the pool filler run, so the cap is checked
        # again after each one, and the slot is taken (``_starting``) in the same step as the
        # check that found it free.
        while True:
            while self._pool:
                session = self._pool.pop(0)
                self._need_fill.set()
                if session.alive():
                    return session
                await self._close(session)
            if self._total() < self.settings.max_sessions:
                break
            if self._pool_starting:
                # The last free slots went to sessions starting for the pool: wait for one
                # and take it, rather than fail a thread because the pool refilled first.
                self._pool_changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._pool_changed.wait(), 0.5)
                continue
            if not await self._evict_one():
                raise SandboxCapacityError(
                    f"all {self.settings.max_sessions} code sessions are busy; try again shortly"
                )
        self._starting += 1
        try:
            return await self.provider.create_session()
        finally:
            self._starting -= 1

    async def _evict_one(self) -> bool:
        """End the least recently used idle thread session to make room."""
        idle = [ts for ts in self._threads.values() if not ts.lock.locked()]
        if not idle:
            return False
        victim = min(idle, key=lambda ts: ts.last_used)
        await self._end(victim.key, victim, remember=True)
        return True

    # -- background -----------------------------------------------------------------------

    async def wait_pool_ready(self, timeout: float) -> bool:
        """Wait until the pool is full (tests and the benchmark use this)."""
        deadline = time.monotonic() + timeout
        await asyncio.wait_for(self.ready(), timeout)
        while len(self._pool) < min(self.settings.pool_size, self.settings.max_sessions):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._pool_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._pool_changed.wait(), min(remaining, 1.0))
        return True

    @property
    def pool_ready(self) -> int:
        return len(self._pool)

    async def _fill_pool(self) -> None:
        backoff = 1.0
        while True:
            await self._need_fill.wait()
            self._need_fill.clear()
            # One start at a time: a burst of kernel starts would starve running sessions.
            # Only the pool's own starts count here: a session starting for a thread (pool
            # empty) is not going to the pool, and waiting for it left the pool short.
            while (
                len(self._pool) + self._pool_starting < self.settings.pool_size
                and self._total() < self.settings.max_sessions
            ):
                self._starting += 1
                self._pool_starting += 1
                try:
                    session = await self.provider.create_session()
                except SandboxError as exc:
                    log.warning(
                        "sandbox pool: could not start a session (%s); retrying in %.0f s", exc, backoff
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(60.0, backoff * 2)
                    continue
                finally:
                    self._starting -= 1
                    self._pool_starting -= 1
                backoff = 1.0
                self._pool.append(session)
                self._pool_changed.set()

    async def _reap(self) -> None:
        shortest = min(self.settings.idle_timeout_s, self.settings.session_lifetime_s)
        interval = max(0.5, min(30.0, shortest / 4))
        while True:
            await asyncio.sleep(interval)
            for key, ts in list(self._threads.items()):
                if not ts.lock.locked() and self._expired(ts):
                    await self._end(key, ts, remember=True)
            for session in [s for s in self._pool if not s.alive()]:
                self._pool.remove(session)
                await self._close(session)
                self._need_fill.set()
