#!/usr/bin/env bash
# Sets up everything, then runs both test tiers:
#   1. in-process tests (real app, real SQLite, real sandbox and index, scripted upstream),
#      and every backend-dependent tier again on PostgreSQL + S3,
#   then the sandbox in its other modes (rlimits, rootless, cgroup v2 in a user-mode Linux guest)
#   2. end-to-end tests: the real server driven by the official SDK 3.x, 1.40.x and 1.20.0 and
#      the azure-ai-agents SDK, once more (SDK 3.x) with the servers on PostgreSQL + S3, and once
#      more (SDK 3.x) with three processes behind nginx on PostgreSQL + S3
# Exits non-zero when anything fails; ends with one "N passed, N failed" line.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh || { echo "setup failed"; exit 1; }
bash scripts/make_sdk_venvs.sh || { echo "SDK venvs failed"; exit 1; }

LOG_DIR="$(mktemp -d)"
status=0
# Lint and types first: cheap, and a failure here is a real defect too.
.venv/bin/ruff check spindle tests bench scripts || status=1
.venv/bin/mypy spindle || status=1
.venv/bin/python -m pytest tests/unit tests/upstream $(ls -d tests/sandbox tests/retrieval tests/security 2>/dev/null) \
  -q -p no:cacheprovider "$@" 2>&1 | tee "$LOG_DIR/inprocess.log" || status=1
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
# Every in-process tier whose behaviour depends on the backends, again on PostgreSQL + S3
# (throwaway servers: tests/pgserver.py with pgvector, tests/s3server.py): the whole of
# tests/unit, tests/security and tests/retrieval (whose apps then keep vector-store indexes in
# PostgreSQL), and the sandbox tests that run the app (engine, pending parts). The sandbox's own
# tests (isolation, limits, sessions, the kernel channel) never touch the store: not repeated.
SPINDLE_TEST_BACKENDS=postgres+s3 .venv/bin/python -m pytest tests/unit tests/security tests/retrieval \
  tests/sandbox/test_ci_engine.py tests/sandbox/test_ci_pending_parts.py \
  --ignore=tests/security/test_sandbox_channel.py \
  -q -p no:cacheprovider "$@" 2>&1 | tee "$LOG_DIR/postgres.log" || status=1
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
# The sandbox in its other modes: rlimits only and rootless on this machine, then cgroup v2 as
# root and rootless (delegated subtree) in a user-mode Linux guest that mounts only cgroup v2.
echo "=== sandbox: rlimits and rootless (scripts/test_sandbox_modes.sh)"
bash scripts/test_sandbox_modes.sh 2>&1 | tee "$LOG_DIR/sandbox-modes.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
echo "=== sandbox: cgroup v2 guest (scripts/test_cgroup_v2.sh)"
bash scripts/test_cgroup_v2.sh 2>&1 | tee "$LOG_DIR/cgroup-v2.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
bash scripts/run_e2e.sh -q "$@" 2>&1 | tee "$LOG_DIR/e2e.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
# The end-to-end tier again with the servers on PostgreSQL + S3 (current SDK only).
echo "=== tests/e2e on PostgreSQL + S3 (.venv-sdk3)"
SPINDLE_TEST_BACKENDS=postgres+s3 SPINDLE_PYTHON="$REPO/.venv/bin/python" .venv-sdk3/bin/python -m pytest tests/e2e \
  -q -p no:cacheprovider "$@" 2>&1 | tee "$LOG_DIR/e2e-postgres.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
# And with three processes behind nginx on PostgreSQL + S3 (current SDK only): every request may land on
# any process (tests/e2e/harness.py, SPINDLE_TEST_TOPOLOGY); nginx comes from scripts/setup_lb.sh.
echo "=== tests/e2e behind nginx, 3 processes on PostgreSQL + S3 (.venv-sdk3)"
{ bash scripts/setup_lb.sh && SPINDLE_TEST_TOPOLOGY=lb3 SPINDLE_TEST_BACKENDS=postgres+s3 \
  SPINDLE_PYTHON="$REPO/.venv/bin/python" .venv-sdk3/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"; } 2>&1 \
  | tee "$LOG_DIR/e2e-lb3.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1

# One closing line for the whole run, summed over every pytest session.
passed=$(grep -hoE '[0-9]+ passed' "$LOG_DIR"/*.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -hoE '[0-9]+ (failed|error|errors)' "$LOG_DIR"/*.log | awk '{s+=$1} END {print s+0}')
skipped=$(grep -hoE '[0-9]+ skipped' "$LOG_DIR"/*.log | awk '{s+=$1} END {print s+0}')
[[ "$passed" -gt 0 ]] || status=1
[[ "$failed" -eq 0 ]] || status=1
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
