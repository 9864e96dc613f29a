#!/usr/bin/env bash
# The sandbox tests on a cgroup-v2-only host, on any machine: boots a user-mode Linux guest
# (Debian user-mode-linux, Linux 6.1, an ordinary process) whose root is this machine's file
# system and which mounts only cgroup v2, and runs the sandbox and isolation tests in it as
# root and as an ordinary user with a delegated cgroup subtree (scripts/uml_init.sh).
#   sudo bash scripts/test_cgroup_v2.sh [TEST PATHS...]
# Exit code 0 only if both runs passed; the guest's full log is kept (path printed at the end).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if ! command -v linux.uml >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q user-mode-linux >/dev/null || {
    echo "cannot install user-mode-linux"; exit 1; }
fi
# Kernel parameters are split at spaces: the guest gets the test list comma-separated.
# All isolation tests, the channel attacks, the limits (the server's and a container's own) and
# the hosts tests. The guest has one slow CPU (every fork goes through ptrace): the fork bomb
# test's 3 s cannot reach the process limit there, test_hosts' process-limit test checks
# pids.max without a time limit instead.
TESTS="${*:-tests/sandbox/test_sandbox_isolation.py tests/security/test_sandbox_channel.py tests/sandbox/test_sandbox_limits.py tests/sandbox/test_session_overrides.py tests/sandbox/test_hosts.py --deselect tests/sandbox/test_sandbox_limits.py::test_fork_bomb_is_contained}"
# The guest runs with PYTHONDONTWRITEBYTECODE (its root is this machine's file system): compile
# the project here first, or a fresh clone compiles every module from source in the guest's
# slow CPU on each import (a fresh clone took twice as long there).
"$REPO/.venv/bin/python" -m compileall -q -j 2 spindle tests scripts >/dev/null 2>&1 || true
# Under /var/tmp, not /tmp: the guest mounts its own /tmp.
out="$(mktemp -d /var/tmp/spindle-uml.XXXXXX)"
: > "$out/result"
echo "cgroup v2 guest: log in $out/guest.log"
start=$(date +%s)
# uml_exec.py: UML 6.1 cannot switch FPU state on AMX hosts without it (see the file).
timeout "${SPINDLE_UML_TIMEOUT:-1800}" /usr/bin/python3 scripts/uml_exec.py /usr/bin/linux.uml \
  mem="${SPINDLE_UML_MEM:-3G}" root=/dev/root rootflags=/ rootfstype=hostfs rw \
  init="$REPO/scripts/uml_init.sh" con=null con0=null,fd:1 \
  SPINDLE_UML_REPO="$REPO" SPINDLE_UML_RESULT="$out/result" SPINDLE_UML_LOG="$out/guest.log" \
  SPINDLE_UML_TESTS="${TESTS// /,}" SPINDLE_UML_STAGE_TIMEOUT="${SPINDLE_UML_STAGE_TIMEOUT:-840}" \
  > "$out/console.log" 2>&1 < /dev/null
rc=$?
grep -E "passed|failed|error" "$out/guest.log" | grep -E "^=+ |[0-9]+ (passed|failed)" || true
echo "guest exited $rc after $(( $(date +%s) - start )) s; results: $(tr '\n' ' ' < "$out/result")"
status=0
for stage in root rootless; do
  if ! grep -qx "$stage 0" "$out/result"; then
    echo "cgroup v2 $stage: FAILED (see $out/guest.log, $out/console.log)"; status=1
  else
    echo "cgroup v2 $stage: passed"
  fi
done
exit $status
