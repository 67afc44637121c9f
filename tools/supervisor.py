"""Run the service's processes (Celery workers, the API) together until a signal.

Used by `fhir-patch serve` (and so by `make run`). Processes are started from
command lines, not imported, so the worker package does not depend on the API.
A process that dies is restarted after a backoff (1 s, doubling to 30 s while
it keeps dying young) and the others keep serving; `/readyz` reports the gap
meanwhile (no worker answers its ping).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from worker.settings import Settings


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set over the supervisor's own environment


def service_processes(
    settings: Settings, workers: int | None = None, concurrency: int | None = None, flower_port: int = 0
) -> list[ProcessSpec]:
    """The Celery worker(s), Flower when asked (bound to loopback like everything else), then the API; the counts
    are the settings' (FHIR_PATCH_WORKERS, FHIR_PATCH_WORKER_CONCURRENCY, FHIR_PATCH_API_PROCESSES) unless given."""
    workers = settings.workers if workers is None else workers
    concurrency = settings.worker_concurrency if concurrency is None else concurrency
    celery = [sys.executable, "-m", "celery", "-A", "worker.celery.process"]
    # Every process counts the same pool: the number of drainers the service keeps (drains.drainer_limits).
    counts = {"FHIR_PATCH_WORKERS": str(workers), "FHIR_PATCH_WORKER_CONCURRENCY": str(concurrency)}
    specs = [
        ProcessSpec(
            f"worker-{n}",
            [*celery, "worker", "--loglevel", settings.log_level, "--concurrency", str(concurrency)]
            + ["--hostname", f"worker{n}@%h", "--without-mingle", "--without-gossip"],
            counts,
        )
        for n in range(1, workers + 1)
    ]
    if flower_port:  # Flower reads the task events the workers send
        specs.append(ProcessSpec("flower", [*celery, "flower", "--address=127.0.0.1", f"--port={flower_port}"]))
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "api.app:app_from_env",
        "--workers",
        str(settings.api_processes),
    ]
    address = ["--host", settings.http_host, "--port", str(settings.http_port)]
    specs.append(ProcessSpec("api", [*uvicorn, *address, "--log-level", settings.log_level.lower()], counts))
    return specs


RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_MAX = 30.0
STABLE_SECONDS = 60.0  # a process that ran this long before dying is restarted at once again (backoff resets)


@dataclass
class Supervised:
    """One process under supervision: its spec, the running process, and when it may be restarted."""

    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = RESTART_BACKOFF_FIRST
    restart_at: float | None = None
    restarts: int = 0


def _start(entry: Supervised, log_dir: Path) -> None:
    with open(log_dir / f"{entry.spec.name}.log", "ab") as out:
        entry.proc = subprocess.Popen(
            entry.spec.argv,
            env={**os.environ, **entry.spec.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    entry.started_at, entry.restart_at = time.monotonic(), None
    print(f"started {entry.spec.name} (pid {entry.proc.pid}), log: {log_dir / (entry.spec.name + '.log')}", flush=True)


def _check(entry: Supervised, log_dir: Path, now: float) -> None:
    """Restart a process that exited, after its backoff (doubling while it keeps dying young); the others stay up."""
    if entry.restart_at is not None:
        if now >= entry.restart_at:
            entry.restarts += 1
            _start(entry, log_dir)
        return
    if entry.proc is None or entry.proc.poll() is None:
        return
    if now - entry.started_at >= STABLE_SECONDS:
        entry.backoff = RESTART_BACKOFF_FIRST
    entry.restart_at = now + entry.backoff
    print(
        f"{entry.spec.name} exited with code {entry.proc.returncode}; restarting it in {entry.backoff:g}s", flush=True
    )
    entry.backoff = min(RESTART_BACKOFF_MAX, entry.backoff * 2)


def supervise(specs: list[ProcessSpec], log_dir: Path) -> int:
    """Start every process, logging to log_dir/NAME.log; restart any that dies (with backoff) while the rest stay
    up; stop all on SIGINT/SIGTERM."""
    log_dir.mkdir(parents=True, exist_ok=True)
    entries = [Supervised(spec) for spec in specs]
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for entry in entries:
            _start(entry, log_dir)
        while not stopping:
            now = time.monotonic()
            for entry in entries:
                _check(entry, log_dir, now)
            time.sleep(0.2)
        return 0
    finally:
        _stop([(e.spec, e.proc) for e in entries if e.proc is not None])


def _stop(running: list[tuple[ProcessSpec, subprocess.Popen[bytes]]]) -> None:
    for _spec, proc in running:
        if proc.poll() is None:
            proc.terminate()
    for spec, proc in running:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            print(f"{spec.name} (pid {proc.pid}) ignored SIGTERM; killing it", flush=True)
            proc.kill()
            proc.wait()
    print("all processes stopped", flush=True)
