"""Start and stop the project's real processes (Celery workers, the API) for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from devkit.procfs import free_port, provision_module  # noqa: F401  (re-exported for the tests)

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent.parent


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if condition():
                return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)  # a test may have paused it
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], logfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop(proc)


def worker_argv(name: str, concurrency: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery.process",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"{name}@%h",
        "--without-mingle",
        "--without-gossip",
    ]


def api_argv(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "api.app:app_from_env",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def wait_http_ok(url: str, timeout: float = 30) -> None:
    wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, timeout, f"200 from {url}")


def wait_progress(
    measure: Callable[[], int], target: int, what: str, stall_seconds: float = 60, interval: float = 0.5
) -> None:
    """Wait until `measure()` reaches `target`; fail only when it has not moved for `stall_seconds` (a slow
    machine is not a fault; a stuck service is)."""
    best, moved_at = -1, time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            value = measure()
            if value >= target:
                return
            if value > best:
                best, moved_at = value, time.monotonic()
        if time.monotonic() - moved_at > stall_seconds:
            raise TimeoutError(f"{what}: stuck at {best} of {target} for {stall_seconds}s")
        time.sleep(interval)
