"""Run the service's processes (Celery workers, the API) together until a signal.

Used by `fhir-patch serve` (and so by `make run`). Processes are started from
command lines, not imported, so the worker package does not depend on the API.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from worker.settings import Settings


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]


def service_processes(settings: Settings, workers: int, concurrency: int, flower_port: int = 0) -> list[ProcessSpec]:
    python = sys.executable
    specs = [
        ProcessSpec(f"worker-{n}", [python, "-m", "celery", "-A", "worker.process", "worker", "--loglevel", settings.log_level,
                                    "--concurrency", str(concurrency), "--hostname", f"worker{n}@%h", "--without-mingle", "--without-gossip"])
        for n in range(1, workers + 1)
    ]
    if flower_port:  # Flower reads the task events the workers send; bound to loopback like everything else
        specs.append(ProcessSpec("flower", [python, "-m", "celery", "-A", "worker.process", "flower", "--address=127.0.0.1",
                                            f"--port={flower_port}"]))
    specs.append(ProcessSpec("api", [python, "-m", "uvicorn", "--factory", "api.app:app_from_env", "--host", settings.http_host,
                                     "--port", str(settings.http_port), "--log-level", settings.log_level.lower()]))
    return specs


def supervise(specs: list[ProcessSpec], log_dir: Path) -> int:
    """Start every process, logging to log_dir/NAME.log; stop all when one exits or on SIGINT/SIGTERM."""
    log_dir.mkdir(parents=True, exist_ok=True)
    running: list[tuple[ProcessSpec, subprocess.Popen[bytes]]] = []
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for spec in specs:
            with open(log_dir / f"{spec.name}.log", "ab") as out:
                running.append((spec, subprocess.Popen(spec.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)))
            print(f"started {spec.name} (pid {running[-1][1].pid}), log: {log_dir / (spec.name + '.log')}", flush=True)
        while not stopping:
            exited = [(s, p) for s, p in running if p.poll() is not None]
            if exited:
                spec, proc = exited[0]
                print(f"{spec.name} exited with code {proc.returncode}; stopping the rest", flush=True)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        _stop(running)


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
