"""Parser processes: every file is read in one of them, never in the server.

A ``ParserPool`` keeps up to ``workers`` processes (``python -m spindle.retrieval.parsers.worker``),
each reading one file at a time and reused for the next, so a file costs a message, not a
process start. Each process has an address-space limit (``RLIMIT_AS``: what it starts with plus
``parse_memory_mb``) and each file a time limit (``parse_timeout_s``) after which the server
kills the process. Whatever a file does to its process (a zip bomb, a page tree of 100,000
pages, a converter that hangs, a segfault) ends as ``invalid_file`` for that file; the next file
gets a fresh process. Threads call ``prepare`` (blocking); at most ``workers`` files are being
read at once and the others wait for a process (the wait does not count against the time limit).

The reply is checked before it is believed: frame sizes are bounded before they are received
(the text by ``max_file_chars``), the header is JSON, the chunk bounds must lie inside the text.

One exception: a small plain-text file (``.txt``, ``.md``, ``.json``, source code: the formats
whose reading is only decoding bytes) is read in the calling thread (``INLINE_TEXT_MAX_BYTES``).
Decoding UTF-8/UTF-16 and counting tokens of at most 256 KiB expands nothing and calls no
document library, so there is nothing for a process boundary to contain, while the round trip
(two frames out, three back, a process switch) was a large part of a one-paragraph file's cost.
Every real parser (PDF, DOCX, PPTX, DOC, HTML) and every larger file still goes to a process.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

import spindle
from spindle.retrieval.chunker import ChunkingStrategy
from spindle.retrieval.errors import ErrorCode, IngestError, invalid
from spindle.retrieval.parsers import ParseLimits, format_of
from spindle.retrieval.parsers.worker import Job, prepare_text
from spindle.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)
_HEADER_MAX = 64 * 1024
_ENV_KEPT = frozenset({"PATH", "HOME", "LANG", "TMPDIR", "TZ", "VIRTUAL_ENV"})
_START_TIMEOUT_S = 120.0  # a loaded machine can take long to import the libraries
_CODES: frozenset[str] = frozenset({"unsupported_file", "invalid_file", "server_error"})
#: Plain-text files up to this size are decoded, tokenised and chunked in the calling thread.
INLINE_TEXT_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class ParsedFile:
    text: str
    bounds: np.ndarray  # (n, 4) int64: token_start, token_end, char_start, char_end
    tokens: int


class _Dead(Exception):
    """The process was gone before it took the job (it retired or was killed while idle)."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        name = signal.Signals(-code).name
        if -code == signal.SIGKILL:
            return f"was killed ({name}; the system may be out of memory)"
        return f"crashed ({name})"
    return f"exited with status {code}"


class _Process:
    """One parser process and the server's end of its socket."""

    def __init__(self, memory_bytes: int, vocab_dir: Path) -> None:
        ours, theirs = socket.socketpair()
        # Only what a parser needs: the server's keys (API keys, the model's and embedder's
        # credentials) stay out of a process that reads hostile bytes.
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEPT or k.startswith(("LC_", "PYTHON"))}
        # The worker must import this same spindle (a worktree, an unpacked tree), not whatever
        # ``-m`` would find from the current directory.
        package_root = str(Path(spindle.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "spindle.retrieval.parsers.worker", str(theirs.fileno()),
                 str(memory_bytes), str(vocab_dir)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env, close_fds=True,
            )
        except OSError as exc:
            ours.close()
            raise IngestError("server_error", f"Could not start a parser process: {exc}") from None
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        # Starting (imports, vocabulary) is not the first file's time: wait for "ready" here.
        try:
            ready = self.conn.poll(_START_TIMEOUT_S) and self.conn.recv_bytes(64) == b"ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise IngestError("server_error", "A parser process did not start "
                              f"({_describe_exit(self.popen.returncode)}).")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        self.conn.close()

    def stop(self) -> None:
        """Close the socket (the process exits at EOF); kill it if it does not."""
        self.conn.close()
        try:
            self.popen.wait(2)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def _recv(self, deadline: float, maxlength: int, timeout_s: float) -> bytes:
        if not self.conn.poll(max(0.0, deadline - time.monotonic())):
            self.kill()
            raise invalid(f"Reading the file took longer than {timeout_s:g} s; that is the limit per file.")
        try:
            return self.conn.recv_bytes(maxlength)
        except (EOFError, ConnectionResetError):  # the process died (reset: with unread input)
            self.kill()
            raise invalid(f"The parser {_describe_exit(self.popen.returncode)} while reading the file.") from None
        except OSError as exc:  # "bad message length": more than the limits allow
            self.kill()
            raise invalid(f"The parser's answer was refused ({exc}).") from None

    def call(self, job: Job, timeout_s: float) -> tuple[ParsedFile | IngestError, bool]:
        """Run ``job``; returns the outcome and whether the process may take another job.
        Raises ``IngestError`` (the process is then dead) on a timeout, crash or bad reply."""
        try:
            self.conn.send_bytes(json.dumps(job.header()).encode("utf-8"))
            if isinstance(job.source, bytes):
                self.conn.send_bytes(job.source)
        except OSError:
            self.kill()
            raise _Dead() from None
        deadline = time.monotonic() + timeout_s
        try:
            head = json.loads(self._recv(deadline, _HEADER_MAX, timeout_s))
            if not isinstance(head, dict) or not isinstance(head.get("ok"), bool):
                raise ValueError("not a reply header")
            reusable = head.get("retire") is False
            if not head["ok"]:
                code = head.get("code")
                if code not in _CODES:
                    raise ValueError(f"unknown code {code!r}")
                error_code: ErrorCode = code
                return IngestError(error_code, str(head.get("message", ""))[:2000]), reusable
            tokens, chunks = int(head["tokens"]), int(head["chunks"])
            if not 0 <= tokens <= job.max_tokens or not 0 <= chunks <= tokens + 1:
                raise ValueError("token or chunk count out of range")
            raw_text = self._recv(deadline, 4 * job.limits.max_chars + 16, timeout_s)
            raw_bounds = self._recv(deadline, 32 * chunks + 16, timeout_s)
            text = raw_text.decode("utf-8")
            del raw_text
            bounds = np.frombuffer(raw_bounds, dtype=np.int64).reshape(-1, 4)
            if len(bounds) != chunks or len(text) > job.limits.max_chars:
                raise ValueError("reply does not match its header")
            if chunks and not (
                (bounds[:, 0] >= 0).all() and (bounds[:, 0] < bounds[:, 1]).all() and (bounds[:, 1] <= tokens).all()
                and (bounds[:, 2] >= 0).all() and (bounds[:, 2] < bounds[:, 3]).all()
                and (bounds[:, 3] <= len(text)).all()
            ):
                raise ValueError("chunk bounds outside the text")
            return ParsedFile(text, bounds, tokens), reusable
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            # Our own worker sent this: never trusted, but a sign of a bug (or a compromised parser).
            log.error("parser process sent a malformed reply for %s: %s", job.filename, exc)
            self.kill()
            raise invalid("The parser's answer for this file was malformed.") from None


class ParserPool:
    """Up to ``workers`` parser processes shared by the threads that ingest files."""

    def __init__(self, workers: int, memory_mb: int, timeout_s: float, vocab_dir: Path) -> None:
        self.workers = max(1, workers)
        self.memory_bytes = memory_mb << 20
        self.timeout_s = timeout_s
        self.vocab_dir = vocab_dir
        self._slots = threading.BoundedSemaphore(self.workers)
        self._idle: list[_Process] = []
        self._busy: list[_Process] = []
        self._lock = threading.Lock()
        self._closed = False

    def _take(self) -> _Process:
        with self._lock:
            if self._closed:
                raise IngestError("server_error", "The server is shutting down.")
            while self._idle:
                proc = self._idle.pop()
                if proc.alive():
                    self._busy.append(proc)
                    return proc
                proc.kill()
        proc = _Process(self.memory_bytes, self.vocab_dir)
        with self._lock:
            self._busy.append(proc)
        return proc

    def _give_back(self, proc: _Process, reusable: bool) -> None:
        with self._lock:
            self._busy.remove(proc)
            if reusable and not self._closed:
                self._idle.append(proc)
                return
        proc.stop()

    def run(self, job: Job) -> ParsedFile:
        """Read one file in a parser process. Raises ``IngestError``."""
        with self._slots:
            for attempt in range(2):
                proc = self._take()
                try:
                    outcome, reusable = proc.call(job, self.timeout_s)
                except _Dead:
                    self._give_back(proc, False)
                    if attempt:  # a fresh process died before taking the job: our problem
                        raise IngestError("server_error", "A parser process could not be started.") from None
                    continue
                except BaseException:
                    proc.kill()
                    self._give_back(proc, False)
                    raise
                self._give_back(proc, reusable)
                if isinstance(outcome, IngestError):
                    raise outcome
                return outcome
        raise AssertionError("unreachable")

    def prepare(self, filename: str, source: Path | bytes, strategy: ChunkingStrategy,
                settings: RetrievalSettings) -> ParsedFile:
        """Parse, count tokens (at most ``settings.max_file_tokens``) and cut chunks of one file."""
        limits = ParseLimits(settings.max_file_chars, settings.max_unzipped_mb << 20, settings.parse_timeout_s)
        inline = _small_text(filename, source)
        job = Job(filename, inline if inline is not None else source if isinstance(source, bytes) else str(source),
                  strategy, settings.max_file_tokens, limits, str(self.vocab_dir))
        if inline is not None:
            text, bounds, tokens = prepare_text(job)
            return ParsedFile(text, bounds, tokens)
        return self.run(job)

    def warm(self) -> None:
        """Start the missing processes now, in parallel, so the first files do not wait ~1 s
        each for one to start (the server calls this at start, off the event loop)."""
        with self._lock:
            missing = self.workers - len(self._idle) - len(self._busy)
        started: list[_Process] = []

        def start() -> None:
            try:
                started.append(_Process(self.memory_bytes, self.vocab_dir))
            except IngestError as exc:  # the first file will try again and report it
                log.warning("warming up the parser processes: %s", exc.message)

        threads = [threading.Thread(target=start, name="spindle-parser-start") for _ in range(max(0, missing))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for proc in started:
            with self._lock:
                keep = not self._closed and len(self._idle) + len(self._busy) < self.workers
                if keep:
                    self._idle.append(proc)
            if not keep:
                proc.stop()

    def pids(self) -> list[int]:
        """Process ids of this pool's parser processes, busy or idle (for tests and benchmarks)."""
        with self._lock:
            return [proc.pid for proc in self._idle + self._busy]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for proc in idle:
            proc.stop()


def _small_text(filename: str, source: Path | bytes) -> bytes | None:
    """The bytes of a plain-text file of at most ``INLINE_TEXT_MAX_BYTES``, or ``None`` when
    the file must go to a parser process (another format, larger, or unreadable here)."""
    fmt = format_of(filename)
    if fmt is None or fmt.kind != "text":
        return None
    if isinstance(source, bytes):
        return source if len(source) <= INLINE_TEXT_MAX_BYTES else None
    try:
        with open(source, "rb") as handle:
            data = handle.read(INLINE_TEXT_MAX_BYTES + 1)  # bounded, whatever the file's size
    except OSError:
        return None  # the process reports why it cannot be read
    return data if len(data) <= INLINE_TEXT_MAX_BYTES else None


_pools: dict[tuple[int, int, float, Path], ParserPool] = {}
_pools_lock = threading.Lock()


def workers_for(settings: RetrievalSettings) -> int:
    return settings.parse_workers if settings.parse_workers > 0 else max(2, os.cpu_count() or 1)


def pool_for(settings: RetrievalSettings) -> ParserPool:
    """The process-wide pool for these settings (apps in one process share their processes)."""
    key = (workers_for(settings), settings.parse_memory_mb, settings.parse_timeout_s, settings.vocab_dir)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ParserPool(*key)
        return pool


@atexit.register
def _close_all() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()
