"""Compile the sandbox's seccomp filter to a BPF program with libseccomp.

bubblewrap loads a pre-compiled classic-BPF program (``--seccomp FD``); we build it with
libseccomp (the library systemd, Docker and Flatpak use; Debian package ``libseccomp2``,
installed on every Debian system) through ctypes, so there is no extra Python dependency.

The policy is a deny-list in the spirit of Flatpak's: the kernel interfaces an untrusted
Python program never needs and that have a history of privilege escalations (namespaces,
mounts, ptrace, BPF, keyrings, io_uring, module loading...) fail with EPERM; socket families
other than Unix, IPv4/IPv6 and netlink fail with EAFNOSUPPORT; syscalls of other
architectures (32-bit ``int 0x80``) kill the process. Everything else is allowed, so the data
stack works unchanged. The network namespace, not this filter, is what removes the network.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import platform
import tempfile

from spindle.sandbox.errors import SandboxUnavailable

_ACT_ALLOW = 0x7FFF0000
_CMP_EQ = 4
_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


# Fail with EPERM: namespaces and mounts (bwrap already set ours up), tracing other
# processes, kernel modules/BPF/perf, keyrings, clocks, swap, reboot and similar host knobs.
_DENIED = (
    "acct add_key bpf chroot clock_adjtime clock_settime create_module delete_module fanotify_init "
    "finit_module fsconfig fsmount fsopen fspick get_kernel_syms init_module io_uring_enter "
    "io_uring_register io_uring_setup ioperm iopl kcmp kexec_file_load kexec_load keyctl "
    "lookup_dcookie mount mount_setattr move_mount name_to_handle_at nfsservctl open_by_handle_at "
    "open_tree perf_event_open pidfd_getfd pivot_root process_vm_readv process_vm_writev ptrace "
    "quotactl quotactl_fd reboot request_key setns settimeofday swapoff swapon syslog sysfs "
    "umount2 unshare uselib userfaultfd ustat vhangup"
).split()

# clone() flags that would create namespaces (a nested user namespace is the classic way back
# to capabilities). bwrap's --disable-userns covers user namespaces too; this is belt and braces.
_CLONE_NS_FLAGS = (
    0x00020000,
    0x02000000,
    0x04000000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
    0x00000080,
)

_ALLOWED_SOCKET_FAMILIES = {1, 2, 10, 16}  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
_TIOCSTI = 0x5412  # push input into the controlling terminal


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SandboxUnavailable(f"libseccomp is not installed ({exc}); apt-get install libseccomp2") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, syscall: str, *cmps: tuple[int, int, int, int]) -> None:
    nr = lib.seccomp_syscall_resolve_name(syscall.encode())
    if nr < 0:  # not a syscall on this architecture (e.g. removed ones): nothing to deny
        return
    arr = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    if rc < 0:
        raise SandboxUnavailable(f"libseccomp refused the rule for {syscall}: {os.strerror(-rc)}")


@functools.lru_cache(maxsize=1)
def compile_filter() -> bytes:
    """Return the BPF program (the same bytes every time; compiled once per process)."""
    if platform.machine() not in ("x86_64", "aarch64"):
        raise SandboxUnavailable(f"the seccomp policy is not written for {platform.machine()}")
    lib = _lib()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SandboxUnavailable("seccomp_init failed")
    try:
        eperm = _act_errno(errno.EPERM)
        for name in _DENIED:
            _add(lib, ctx, eperm, name)
        for flag in _CLONE_NS_FLAGS:
            _add(lib, ctx, eperm, "clone", (0, _CMP_MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory, which seccomp cannot inspect; ENOSYS makes glibc
        # fall back to clone(), which the rules above do inspect.
        _add(lib, ctx, _act_errno(errno.ENOSYS), "clone3")
        for family in range(0, 64):
            if family not in _ALLOWED_SOCKET_FAMILIES:
                _add(lib, ctx, _act_errno(errno.EAFNOSUPPORT), "socket", (0, _CMP_EQ, family, 0))
        _add(lib, ctx, eperm, "ioctl", (1, _CMP_MASKED_EQ, 0xFFFFFFFF, _TIOCSTI))
        with tempfile.TemporaryFile() as out:
            rc = lib.seccomp_export_bpf(ctx, out.fileno())
            if rc < 0:
                raise SandboxUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            out.seek(0)
            return out.read()
    finally:
        lib.seccomp_release(ctx)
