"""Host-side file operations on a session's directories, safe against a hostile sandbox.

The server (root) reads and writes inside directories that untrusted code controls. The code
may plant symlinks (``/mnt/data/x -> /etc/shadow``), FIFOs, sparse giant files, or swap a
directory for a link between our check and our use. So every path is resolved one component
at a time from a directory fd with ``O_NOFOLLOW``, new files are created with ``O_EXCL``,
and only regular files are read, up to a size bound. Never use plain ``open(path)`` on
sandbox paths.

Also here: mounting the per-session tmpfs that bounds /mnt/data and /tmp. Everything blocks;
call from worker threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_ENTRIES = 5000
_MAX_DEPTH = 8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount_tmpfs(target: str, *, size_bytes: int, uid: int, mode: int = 0o700) -> None:
    """Mount a tmpfs of ``size_bytes`` owned by ``uid`` on ``target`` (needs CAP_SYS_ADMIN)."""
    inodes = max(1024, size_bytes // 16384)  # bound inode count too, or tiny files fill RAM
    opts = f"size={size_bytes},nr_inodes={inodes},mode={mode:o},uid={uid},gid={uid}"
    if _libc.mount(b"spindle-sandbox", target.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def unmount(target: str) -> None:
    """Lazily unmount ``target``; a no-op when nothing is mounted there."""
    if _libc.umount2(target.encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def is_mount(path: str) -> bool:
    return os.path.ismount(path)


def safe_name(name: str) -> str:
    """A single path component from an uploaded file's name (no separators, no NULs, no dots-only)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "").strip()
    if base in ("", ".", ".."):
        base = "file"
    encoded = base.encode("utf-8", "surrogatepass")
    while len(encoded) > 200:  # leave room for a " (n)" suffix under NAME_MAX
        base = base[:-1]
        encoded = base.encode("utf-8", "surrogatepass")
    return base


def _candidates(name: str) -> Iterator[str]:
    yield name
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(1, 1000):
        yield f"{stem}_{n}{dot}{ext}"


def write_new_file(dir_path: str, name: str, data: bytes, uid: int, *, mode: int = 0o644) -> str:
    """Create a new file in ``dir_path`` under ``name`` or a deduplicated variant; return the name used.

    ``O_EXCL | O_NOFOLLOW`` means an existing entry (file, link, FIFO) is never opened: we
    move on to the next candidate name instead."""
    dir_fd = os.open(dir_path, _DIR_FLAGS)
    try:
        for candidate in _candidates(safe_name(name)):
            try:
                fd = os.open(
                    candidate,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    mode,
                    dir_fd=dir_fd,
                )
            except FileExistsError:
                continue
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fchown(fd, uid, uid)
            except BaseException:
                # A half-written file (ENOSPC) would only take the space a retry needs.
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(candidate, dir_fd=dir_fd)
                raise
            os.close(fd)
            return candidate
        raise FileExistsError(f"no free name for {name!r}")
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int


def snapshot(dir_path: str) -> dict[str, FileStat]:
    """Regular files under ``dir_path`` (relative paths), without following any link."""
    found: dict[str, FileStat] = {}
    try:
        root_fd = os.open(dir_path, _DIR_FLAGS)
    except OSError:
        return found
    stack: list[tuple[int, str, int]] = [(root_fd, "", 0)]
    try:
        while stack:
            fd, prefix, depth = stack.pop()
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if len(found) >= _MAX_ENTRIES:
                            return found
                        st = entry.stat(follow_symlinks=False)
                        rel = prefix + entry.name
                        if stat.S_ISREG(st.st_mode):
                            found[rel] = FileStat(st.st_size, st.st_mtime_ns)
                        elif stat.S_ISDIR(st.st_mode) and depth < _MAX_DEPTH:
                            with contextlib.suppress(OSError):
                                stack.append(
                                    (os.open(entry.name, _DIR_FLAGS, dir_fd=fd), rel + "/", depth + 1)
                                )
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return found


def remove_file(dir_path: str, rel_path: str) -> bool:
    """Unlink the entry at ``rel_path`` under ``dir_path``: the directories on the way are
    opened without following links, and the last component is unlinked, never followed (a
    link is removed, not its target). False when nothing is there or it is a directory."""
    parts = [p for p in rel_path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"bad path {rel_path!r}")
    try:
        fd = os.open(dir_path, _DIR_FLAGS)
    except OSError:
        return False
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        os.unlink(parts[-1], dir_fd=fd)
        return True
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link where a directory should be: not followed
            return False
        raise
    finally:
        os.close(fd)


def read_file(dir_path: str, rel_path: str, max_bytes: int) -> bytes:
    """Read a regular file at ``rel_path`` under ``dir_path``; raises if it is anything else
    (a link anywhere on the way, a FIFO, a device) or larger than ``max_bytes``."""
    parts = [p for p in rel_path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"bad path {rel_path!r}")
    fd = os.open(dir_path, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        st = os.fstat(file_fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{rel_path!r} is not a regular file")
        if st.st_size > max_bytes:
            raise ValueError(f"{rel_path!r} is larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(file_fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:  # grew while we read
            raise ValueError(f"{rel_path!r} is larger than {max_bytes} bytes")
        return data
    finally:
        os.close(file_fd)
