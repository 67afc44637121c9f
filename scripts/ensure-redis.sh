#!/usr/bin/env bash
# Make sure Debian's redis-server is installed; print its path.
set -euo pipefail
if ! command -v redis-server >/dev/null; then
  echo "ensure-redis: installing Debian's redis-server" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >&2
  # --no-install-recommends keeps it to the server; we start it ourselves on our own port.
  $SUDO apt-get install -y -q --no-install-recommends redis-server >&2
fi
command -v redis-server
