#!/usr/bin/env bash
# Prepare a Debian host for Spindle's Code Interpreter sandbox. Idempotent, non-interactive;
# run as root. What it sets up:
#   * bubblewrap (the isolation tool), libseccomp2 (the seccomp filter compiler, used through
#     ctypes), util-linux, and the Debian Python used as the sandbox's interpreter;
#   * a separate, world-readable Python environment for untrusted code at
#     $SANDBOX_VENV (default /opt/spindle-sandbox/venv) with the data-science stack and ipykernel.
#     It is separate from the server's venv on purpose: the sandbox bind-mounts it read-only,
#     it must be readable by the unprivileged sandbox uids, and it must not contain the server;
#   * the parent cgroups for the sandboxes on a cgroup v1 host (recreated at every server start anyway).
# Nothing here needs the repository except this file; REPO is only used to report paths.
set -euo pipefail

SANDBOX_HOME="${SANDBOX_HOME:-/opt/spindle-sandbox}"
SANDBOX_VENV="${SANDBOX_VENV:-$SANDBOX_HOME/venv}"
SANDBOX_PYTHON_BASE="${SANDBOX_PYTHON_BASE:-/usr/bin/python3}"

if [[ "$(id -u)" != "0" ]]; then
  echo "setup_sandbox.sh must run as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
need_pkgs=()
for pkg in bubblewrap libseccomp2 util-linux python3 python3-venv python3-dev fonts-dejavu-core; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if ((${#need_pkgs[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# The data-science stack offered to the model. Keep in step with docs/sandbox.md.
PACKAGES=(
  ipykernel jupyter_client matplotlib matplotlib-inline numpy pandas scipy sympy scikit-learn
  openpyxl xlrd python-docx python-pptx pypdf pillow seaborn statsmodels networkx tabulate
  beautifulsoup4 lxml pyarrow
)

install -d -m 0755 "$SANDBOX_HOME"
if [[ ! -x "$SANDBOX_VENV/bin/python" ]]; then
  "$SANDBOX_PYTHON_BASE" -m venv "$SANDBOX_VENV"
  "$SANDBOX_VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
fi
# A no-op (and no download) when everything is already installed.
"$SANDBOX_VENV/bin/python" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}"
# Byte-compile now: the sandbox mounts the venv read-only, so it could never cache .pyc files.
"$SANDBOX_VENV/bin/python" -m compileall -q -j 0 "$SANDBOX_VENV/lib" >/dev/null 2>&1 || true
chmod -R a+rX "$SANDBOX_HOME"

# Building a container image (Dockerfile): the host checks below are for the machine that
# runs the image, where scripts/docker-entrypoint.sh prepares the cgroups instead.
if [[ "${SANDBOX_SETUP_IMAGE:-0}" == "1" ]]; then
  echo "sandbox image ready: python=$SANDBOX_VENV/bin/python"
  exit 0
fi

# Limits: cgroup v1 (parents made here; the server makes its own children at start), else
# cgroup v2, else rlimits only. The server's start-up line says which limits hold.
missing=0
for ctl in memory pids cpu; do
  mnt="$(awk -v c="$ctl" '$3 == "cgroup" && ("," $4 ",") ~ ("," c ",") {print $2; exit}' /proc/self/mounts)"
  if [[ -n "$mnt" ]]; then
    mkdir -p "$mnt/spindle-sandbox"
  else
    missing=1
  fi
done
if ((missing)); then
  if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    echo "cgroup v2 host: the sandbox limits sessions with memory.max, pids.max and cpu.max" \
         "(docs/sandbox.md, 'Hosts and modes')"
  else
    echo "warning: no cgroup v1 controllers and no cgroup v2 memory controller here: the sandbox" \
         "will run with rlimits only and log which limits are missing (docs/sandbox.md, 'Hosts and modes')" >&2
  fi
fi

# A quick end-to-end check that a user namespace can be created by an unprivileged uid.
if ! setpriv --reuid=2100000000 --regid=2100000000 --clear-groups \
     bwrap --unshare-all --unshare-user --die-with-parent --ro-bind /usr /usr \
           --symlink usr/lib64 /lib64 --symlink usr/lib /lib --symlink usr/bin /bin \
           --proc /proc --dev /dev /bin/true; then
  echo "error: bubblewrap cannot create namespaces here (user namespaces disabled?)" >&2
  exit 1
fi

echo "sandbox ready: python=$SANDBOX_VENV/bin/python (set SPINDLE_SANDBOX_PYTHON to change)"
