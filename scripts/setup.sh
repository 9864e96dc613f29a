#!/usr/bin/env bash
# Installs everything Spindle needs on a fresh Debian machine (run as root; idempotent).
#   - Debian packages for the Code Interpreter sandbox and the File Search parsers
#   - .venv with the CPU build of torch (pinned first, so nothing pulls a CUDA build),
#     the server and its subsystems, versions pinned by requirements.lock
# Set SPINDLE_SETUP_QUICK=1 to skip the work when the venv is already complete.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"

if [[ "${SPINDLE_SETUP_QUICK:-0}" == "1" && -f .venv/.spindle-setup-done ]]; then
  exit 0
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
VPIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and pinned: a plain "torch" requirement would pull several GB of CUDA wheels.
.venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null \
  || "${VPIP[@]}" "torch==2.13.0"
"${VPIP[@]}" -c requirements.lock -e ".[search,test]"

# Subsystem host set-up (Debian packages, the sandbox's own Python, the tokenizer's ranks).
for part in setup_sandbox.sh setup_retrieval.sh setup_postgres.sh; do
  if [[ -f "scripts/$part" ]]; then
    bash "scripts/$part"
  fi
done
touch .venv/.spindle-setup-done
