#!/usr/bin/env bash
# PostgreSQL for the PostgreSQL backend's tests (and for anyone who wants
# SPINDLE_DATABASE_URL=postgresql://... on this machine).
#   - The tests run the binaries bundled in the PyPI package `pgserver` (PostgreSQL 16 with the
#     pgvector extension, which the vector index on PostgreSQL needs; setup.sh installs it into
#     .venv with the test extras). Debian bookworm has no pgvector package for its PostgreSQL 15.
#   - Debian's `postgresql` stays installed too (psql, and a server for a metadata-only setup).
# The tests start their own throwaway clusters (tests/pgserver.py); nothing is started here,
# and the Debian default cluster is left as the package makes it. Idempotent.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "$(id -u)" != "0" ]]; then
  echo "setup_postgres.sh must run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql
fi
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || { echo "postgresql did not install" >&2; exit 1; }
# The bundled server must have pgvector, and be runnable by the unprivileged `postgres` user
# (PostgreSQL refuses root; tests/pgserver.py starts it through runuser).
if [[ -x "$REPO/.venv/bin/python" ]]; then
  bundled="$("$REPO/.venv/bin/python" - <<'PY'
from importlib import metadata
try:
    print(metadata.distribution("pgserver").locate_file("pgserver/pginstall"))
except metadata.PackageNotFoundError:
    print("")
PY
)"
  if [[ -z "$bundled" || ! -f "$bundled/share/postgresql/extension/vector.control" ]]; then
    echo "the pgserver package (PostgreSQL with pgvector) is missing from .venv; run scripts/setup.sh" >&2
    exit 1
  fi
  runuser -u postgres -- "$bundled/bin/postgres" --version >/dev/null \
    || { echo "the bundled PostgreSQL cannot run as the postgres user" >&2; exit 1; }
fi
