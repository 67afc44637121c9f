"""Debian's Chromium for the browser tests and bench/ui_watch.py: where it is, and how it must start here."""

from __future__ import annotations

import os
import shutil

# What the machine's closed network needs: no background fetches, no first-run work, no sandbox (tests run as root).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    """FHIR_PATCH_CHROMIUM, else Debian's `chromium` on PATH (scripts/ensure-chromium.sh installs it)."""
    return os.environ.get("FHIR_PATCH_CHROMIUM") or shutil.which("chromium")
