#!/usr/bin/env bash
# The sandbox isolation suite in the modes this machine offers besides the default one
# (which the in-process tier covers): rlimits only as root, and rootless (an ordinary user,
# unprivileged user namespaces; a delegated cgroup v2 subtree if the host has one, else
# rlimits). cgroup v2 as root and rootless: scripts/test_cgroup_v2.sh.
#   sudo bash scripts/test_sandbox_modes.sh [TEST PATHS...]
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
tests=("$@")
[[ ${#tests[@]} -gt 0 ]] || tests=(tests/sandbox/test_sandbox_isolation.py tests/security/test_sandbox_channel.py
  tests/sandbox/test_hosts.py)
uid="${SPINDLE_TEST_ROOTLESS_UID:-2146000000}"
export SPINDLE_TEST_SANDBOX_TAG="${SPINDLE_TEST_SANDBOX_TAG:-spindle-test}-modes"
status=0
echo "=== sandbox as root, rlimits only"
SPINDLE_SANDBOX_LIMITS=rlimits .venv/bin/python -m pytest "${tests[@]}" -q -p no:cacheprovider || status=1
echo "=== sandbox rootless (uid $uid)"
# On a tmpfs, as the rootless default ($XDG_RUNTIME_DIR) is.
work="$(mktemp -d /dev/shm/sr.XXXXXX)"  # short: Unix socket paths are limited
chown "$uid:$uid" "$work"
bash scripts/run_rootless.sh "$uid" env SPINDLE_TEST_SANDBOX_WORK_DIR="$work" \
  .venv/bin/python -m pytest "${tests[@]}" -q -p no:cacheprovider || status=1
rm -rf "$work"
exit $status
