"""Provisioning the real services, free loopback ports, and facts about running processes (from /proc)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
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


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children...), not `pid` itself."""
    found: set[int] = set()
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        for child in path.read_text().split():
            found |= {int(child)} | descendants(int(child))
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat)


def command_name(pid: int) -> str:
    """A short name for a process: its executable, or the Python module it runs."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for marker, name in (
        ("uvicorn", "api"),
        ("celery", "worker"),
        ("redis-server", "redis"),
        ("ferretdb", "ferretdb"),
        ("mongod", "mongod"),
    ):
        if any(marker in w for w in words):
            return name
    return Path(words[0]).name if words else "?"
