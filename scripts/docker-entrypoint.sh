#!/bin/sh
# Entrypoint of the Spindle container image (Dockerfile; README "Running in a container").
#
# On a cgroup v2 host the container gets its own cgroup namespace (docker's default there),
# whose root holds every process of the container. cgroup v2 lets a cgroup hand controllers
# to its children only while it holds no processes itself, so before the server starts we
# move the container's processes into a leaf (init/) and enable the cpu, memory and pids
# controllers for the children: the server then makes its session cgroups beside init/.
# This is the same preparation docker-in-docker does. On cgroup v1, or with no writable
# cgroup, nothing is done here and the server says at start which limits hold.
#
# "serve [ARGS]" (the default) runs the server; any other command is run as given.
set -eu

CGROUP_ROOT="${SPINDLE_ENTRYPOINT_CGROUP_ROOT:-/sys/fs/cgroup}"
SERVER_PYTHON="${SPINDLE_ENTRYPOINT_PYTHON:-/opt/spindle/.venv/bin/python}"

log() { echo "spindle-entrypoint: $*" >&2; }

prepare_cgroup_v2() {
    root=$1
    [ -f "$root/cgroup.controllers" ] || return 0  # cgroup v1 or none: nothing to prepare
    if [ ! -w "$root/cgroup.procs" ]; then
        # docker mounts the cgroup read-only unless told otherwise; with CAP_SYS_ADMIN we may remount.
        if ! mount -o remount,rw "$root" 2>/dev/null; then
            log "$root is read-only: no cgroup limits for code sessions (see README, 'Running in a container')"
            return 0
        fi
    fi
    mkdir -p "$root/init"
    # Processes may fork while they are moved: go over the list until it is empty.
    for _ in 1 2 3 4 5; do
        moved=0
        while read -r pid; do
            echo "$pid" >>"$root/init/cgroup.procs" 2>/dev/null && moved=1
        done <"$root/cgroup.procs"
        [ "$moved" = 1 ] || break
    done
    for controller in cpu memory pids; do
        if grep -qw "$controller" "$root/cgroup.controllers"; then
            echo "+$controller" >>"$root/cgroup.subtree_control" \
                || log "could not enable the $controller controller in $root"
        else
            log "the $controller controller is not delegated to this container"
        fi
    done
}

prepare_cgroup_v2 "$CGROUP_ROOT"

if [ "$#" -eq 0 ] || [ "$1" = serve ]; then
    [ "$#" -gt 0 ] && shift
    exec "$SERVER_PYTHON" -m spindle serve --host "${SPINDLE_HOST:-0.0.0.0}" --port "${SPINDLE_PORT:-8000}" \
        --data-dir "${SPINDLE_DATA_DIR:-/data}" "$@"
fi
exec "$@"
