"""Exec user-mode Linux so that it saves guest FPU state the legacy way (a test-bed helper).

    python3 scripts/uml_exec.py /usr/bin/linux.uml ARGS...

UML 6.1 saves and restores a guest's FPU registers with PTRACE_{GET,SET}REGSET NT_X86_XSTATE
using a buffer of its own fixed size. On a host whose CPU has AMX (Sapphire Rapids and
later), the host kernel accepts PTRACE_SETREGSET only with a buffer of the full XSAVE size,
and every guest process dies at once ("userspace - ptrace set fp regs failed, errno = 14").
UML probes XSTATE support once with PTRACE_GETREGSET at boot and otherwise uses
PTRACE_{GET,SET}FPREGS, so a seccomp filter that fails exactly that probe (EIO) makes it
boot. The cost: AVX state is not switched between threads of one guest process, which the
sandbox tests (mostly one busy thread per process) tolerate. Loaded with libseccomp (Debian
libseccomp2) through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

PTRACE_GETREGSET = 0x4204
NT_X86_XSTATE = 0x202
_ACT_ALLOW = 0x7FFF0000
_CMP_EQ = 4


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: uml_exec.py LINUX_UML [ARGS...]")
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        sys.exit("seccomp_init failed")
    cmps = (_ArgCmp * 2)(_ArgCmp(0, _CMP_EQ, PTRACE_GETREGSET, 0), _ArgCmp(2, _CMP_EQ, NT_X86_XSTATE, 0))
    nr = lib.seccomp_syscall_resolve_name(b"ptrace")
    rc = lib.seccomp_rule_add_array(ctx, 0x00050000 | errno.EIO, nr, 2, cmps)
    if rc < 0 or lib.seccomp_load(ctx) < 0:
        sys.exit(f"loading the seccomp filter failed ({rc})")
    os.execv(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv)
