#!/usr/bin/env bash
# Create the SDK-only virtualenvs the end-to-end tier runs under, next to the repo root:
#   .venv-sdk3   openai==3.52.0  (current SDK)
#   .venv-sdk140 openai==1.40.8  (what most existing code pins)
#   .venv-sdk120 openai==1.20.0  (the last SDK speaking the Assistants v1 shape)
# Each holds only the SDK, pytest, pytest-timeout, typing_extensions and httpx: the tests
# must drive Spindle the way users do, never import it. Idempotent: a venv that already has
# the right openai version (and pytest) is left alone.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

# dir, openai version, extra requirements
specs=(
  ".venv-sdk3|3.52.0|httpx"
  # openai < 1.55 passes `proxies=` to httpx, which httpx 0.28 removed.
  ".venv-sdk140|1.40.8|httpx<0.28"
  ".venv-sdk120|1.20.0|httpx<0.28"
)

has_version() {
  local venv="$1" version="$2"
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$version" <<'EOF' 2>/dev/null
import sys
import openai, pytest, pytest_timeout, typing_extensions  # noqa: F401  all must import
sys.exit(0 if openai.__version__ == sys.argv[1] else 1)
EOF
}

for spec in "${specs[@]}"; do
  IFS='|' read -r name version extra <<<"$spec"
  venv="$repo_root/$name"
  if has_version "$venv" "$version"; then
    echo "$name: openai $version already installed"
    continue
  fi
  echo "$name: installing openai $version"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "openai==$version" pytest pytest-timeout typing_extensions "$extra"
  has_version "$venv" "$version" || { echo "$name: openai $version did not install" >&2; exit 1; }
done
