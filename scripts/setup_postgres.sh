#!/usr/bin/env bash
# The PostgreSQL server binaries for the PostgreSQL backend's tests (and for anyone who wants
# SPINDLE_DATABASE_URL=postgresql://... on this machine): Debian's `postgresql` package.
# The tests start their own throwaway clusters (tests/pgserver.py); nothing is started here,
# and the Debian default cluster is left as the package makes it. Idempotent.
set -euo pipefail

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
