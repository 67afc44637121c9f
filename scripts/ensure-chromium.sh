#!/usr/bin/env bash
# Make sure Debian's Chromium is installed, for the browser tests (tests/browser/); print its path.
# Playwright drives it through executable_path, so no browser is downloaded by a test tool.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  echo "ensure-chromium: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >&2
  # --no-install-recommends keeps it to the browser: no fonts beyond its own, no desktop integration.
  $SUDO apt-get install -y -q --no-install-recommends chromium >&2
fi
command -v chromium
