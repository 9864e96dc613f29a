#!/usr/bin/env bash
# Run a command as an ordinary user (no passwd entry needed), for the rootless sandbox tests.
#   sudo bash scripts/run_rootless.sh UID COMMAND...
# The server's Python may live under /root (mode 0700, e.g. pyenv): in a private mount
# namespace /root is replaced by an empty tmpfs holding only a bind of /root/.pyenv, so the
# user can run it. Nothing changes on the host. The command's HOME is a fresh directory.
set -euo pipefail
uid="$1"; shift
home="$(mktemp -d /tmp/spindle-rootless-home.XXXXXX)"
chown "$uid:$uid" "$home"
trap 'rm -rf "$home"' EXIT
export HOME="$home"
unshare --mount --propagation private -- bash -c '
  set -e
  uid="$1"; shift
  if [ -d /root/.pyenv ]; then
    keep="$(mktemp -d)"
    mount --bind /root/.pyenv "$keep"
    mount -t tmpfs -o mode=0755,size=1m spindle-root /root
    mkdir /root/.pyenv
    mount --move "$keep" /root/.pyenv
  fi
  exec setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$@"
' rootless "$uid" "$@"
