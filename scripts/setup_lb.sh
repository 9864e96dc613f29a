#!/usr/bin/env bash
# The load balancer for the many-processes tests (SPINDLE_TEST_TOPOLOGY=lb3, tests/e2e/test_lb*.py,
# scripts/rolling_restart.py, bench/bench_processes.py): Debian's `nginx` package.
# The tests start their own nginx (own config, own port, no daemon; tests/e2e/harness.py);
# the Debian service is not started by the install (policy-rc.d), nor later. Idempotent.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
  exit 0
fi
if [[ "$(id -u)" != "0" ]]; then
  echo "setup_lb.sh must run as root (apt-get install nginx)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the package's init script from starting a system nginx on port 80 (nothing here uses it).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  made_policy=1
fi
trap '[[ $made_policy == 1 ]] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx
[[ -x /usr/sbin/nginx ]] || { echo "nginx did not install" >&2; exit 1; }
