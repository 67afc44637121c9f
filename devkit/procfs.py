"""Provisioning the real services, free loopback ports, and facts about running processes (from /proc)."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def provision_module() -> ModuleType:
    """scripts/provision.py (a script, not a package module), loaded for tests and benchmarks."""
    spec = importlib.util.spec_from_file_location("provision", ROOT / "scripts" / "provision.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(proc: subprocess.Popen[bytes]) -> float:
    """Peak resident memory (VmHWM) of a process or its largest child, in MiB."""
    pids = [proc.pid] + [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    peaks = []
    for pid in pids:
        with contextlib.suppress(OSError):
            peaks += [
                int(line.split()[1]) / 1024
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            ]
    return round(max(peaks, default=0.0), 1)
