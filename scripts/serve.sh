#!/usr/bin/env bash
# Sets up (first time) and starts Spindle with the embedded defaults:
# SQLite + files under ./spindle-data, loopback only. Extra arguments go to `spindle serve`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPINDLE_SETUP_QUICK=1 bash "$REPO/scripts/setup.sh"
exec "$REPO/.venv/bin/spindle" serve "$@"
