#!/bin/bash
# PID 1 of the cgroup-v2 test guest (see scripts/test_cgroup_v2.sh, which passes the
# variables below on the kernel command line). The guest's root is the host's file system
# (hostfs); only cgroup v2 is mounted. Runs the sandbox tests as root, then as an ordinary
# user with a delegated cgroup subtree, and writes one "stage rc" line per run to
# $SPINDLE_UML_RESULT. Always powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The guest cannot switch AVX state (scripts/uml_exec.py): glibc must use its SSE string
# functions from the first process on, this shell included.
tunables=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-AVX2,-AVX,-AVX_Fast_Unaligned_Load,-ERMS,-FMA
if [ "${GLIBC_TUNABLES:-}" != "$tunables" ]; then
  export GLIBC_TUNABLES="$tunables"
  exec /bin/bash "$0" "$@"
fi
result="${SPINDLE_UML_RESULT:?}"
log="${SPINDLE_UML_LOG:?}"
finish() { sync; echo o > /proc/sysrq-trigger 2>/dev/null; halt -f; }
trap finish EXIT
exec >>"$log" 2>&1
set -x
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Only cgroup v2 (on a tmpfs first: mounted straight onto sysfs's directory it showed no controllers).
mount -t tmpfs -o mode=0755 cgroup-root /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# The host's /tmp and /run are not ours (and hostfs cannot hold Unix sockets).
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
ip link set lo up
hostname spindle-uml
set +x
echo "guest: $(uname -r), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
grep cgroup /proc/self/mounts
cd "${SPINDLE_UML_REPO:?}"
IFS=, read -ra tests <<< "${SPINDLE_UML_TESTS:?}"
uid="${SPINDLE_UML_UID:-2146000000}"
export SPINDLE_TEST_SANDBOX_TAG=spx-uml SPINDLE_TEST_SANDBOX_UID_BASE=2130000000 SPINDLE_TEST_SANDBOX_INTERRUPT_GRACE_S=8
export PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
# Likewise numpy, OpenBLAS and Arrow, here and, through wrappers, in bubblewrap and inside
# the sandbox (whose environment is otherwise built from scratch).
simd_env="GLIBC_TUNABLES=$tunables"'
NPY_DISABLE_CPU_FEATURES=AVX512_SPR AVX512_ICL AVX512_CNL AVX512_CLX AVX512_SKX AVX512F AVX512CD X86_V4 AVX2 FMA3 F16C AVX X86_V3
OPENBLAS_CORETYPE=NEHALEM
ARROW_USER_SIMD_LEVEL=NONE'
while IFS= read -r line; do export "$line"; done <<< "$simd_env"
sandbox_python="${SPINDLE_UML_SANDBOX_PYTHON:-/opt/spindle-sandbox/venv/bin/python}"
# Wrappers that set the same variables for bubblewrap (the launcher gives it only PATH) and
# for the sandbox's Python (bubblewrap clears the environment). Under /run: the sandbox gets
# its own /tmp.
wrappers=/run/uml-sandbox
mkdir -p "$wrappers/bin"
wrapper() {  # NAME TARGET
  {
    echo '#!/bin/sh'
    while IFS= read -r line; do printf "export '%s'\n" "$line"; done <<< "$simd_env"
    echo "exec $2 \"\$@\""
  } > "$wrappers/bin/$1"
  chmod 0755 "$wrappers/bin/$1"
}
wrapper python "$sandbox_python"
wrapper bwrap /usr/bin/bwrap
chmod 0755 "$wrappers" "$wrappers/bin"
export SPINDLE_SANDBOX_PYTHON="$wrappers/bin/python" SPINDLE_SANDBOX_BWRAP_PATH="$wrappers/bin/bwrap"
export SPINDLE_SANDBOX_EXTRA_RO_BINDS="$(dirname "$(dirname "$sandbox_python")")"
# One slow CPU: no preload (each session would spend ~10 s importing the data stack).
export SPINDLE_SANDBOX_PRELOAD=

echo "=== as root, cgroup v2 (SPINDLE_SANDBOX_LIMITS=cgroup_v2)"
SPINDLE_SANDBOX_LIMITS=cgroup_v2 timeout "${SPINDLE_UML_STAGE_TIMEOUT:-300}" \
  .venv/bin/python -m pytest "${tests[@]}" -q -p no:cacheprovider -o log_cli=true --log-cli-level=WARNING
echo "root $?" >> "$result"

echo "=== rootless (uid $uid), delegated cgroup v2 subtree"
# What systemd does for Delegate=yes: the user owns the cgroup, its procs and subtree_control.
echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control
deleg=/sys/fs/cgroup/spindle-user
mkdir -p "$deleg"
chown "$uid:$uid" "$deleg" "$deleg/cgroup.procs" "$deleg/cgroup.subtree_control" "$deleg/cgroup.threads"
echo $$ > "$deleg/cgroup.procs"
mkdir -p /tmp/rootless && chown "$uid:$uid" /tmp/rootless
SPINDLE_SANDBOX_LIMITS=cgroup_v2 SPINDLE_TEST_SANDBOX_WORK_DIR=/tmp/rootless \
  timeout "${SPINDLE_UML_STAGE_TIMEOUT:-300}" bash scripts/run_rootless.sh "$uid" \
  .venv/bin/python -m pytest "${tests[@]}" -q -p no:cacheprovider -o log_cli=true --log-cli-level=WARNING
echo "rootless $?" >> "$result"
