"""What the benchmarks share: start the whole service on its own services, read its counters."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.procfs import peak_rss_mib, provision_module  # noqa: E402,F401  (peak_rss_mib: re-exported)
from tools.dev_auth import dev_token, ensure_dev_key  # noqa: E402
from tools.supervisor import service_processes  # noqa: E402
from worker.settings import Settings  # noqa: E402

# The bearer header of the running service (a development key made in the benchmark's state folder).
AUTH: dict[str, str] = {}


@contextlib.contextmanager
def running(
    workers: int, state: Path, concurrency: int = 1, api_processes: int = 1, log_level: str = "WARNING"
) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    provision = provision_module()
    with provision.services(state) as env:
        port = provision.free_port()
        token = uuid.uuid4().hex[:8]
        key = ensure_dev_key(state / "auth")
        full = {
            **os.environ,
            **env,
            **key.environment(),
            "FHIR_PATCH_HTTP_PORT": str(port),
            "FHIR_PATCH_DATABASE": f"bench_{token}",
            "FHIR_PATCH_NAMESPACE": f"bench-{token}",
            "FHIR_PATCH_LOG_LEVEL": log_level,
            "FHIR_PATCH_API_PROCESSES": str(api_processes),
        }
        AUTH["authorization"] = f"Bearer {dev_token(key, 'system/*.cruds system/metrics.read', 'bench', 86_400)}"
        specs = service_processes(Settings.from_env(full), workers, concurrency)
        procs = [
            subprocess.Popen(
                s.argv,
                env={**full, **s.env},
                stdout=open(state / f"{s.name}.log", "ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for s in specs
        ]
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base)
            yield base, procs
        finally:
            _stop(procs)


def _wait_ready(base: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)


def counts(base: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", trust_env=False, headers=AUTH).text.splitlines():
        if line.startswith("fhir_patch_jobs_") and "_total " in line:
            name, value = line.split()
            found[name.removeprefix("fhir_patch_jobs_").removesuffix("_total")] = float(value)
    return found


def wait_ended(base: str, accepted: float) -> None:
    while True:
        c = counts(base)
        if c.get("applied", 0) + c.get("failed", 0) >= accepted:
            return
        time.sleep(0.05)


def open_loop(
    base: str, rate: float, seconds: float, send: Callable[[httpx.Client, int], httpx.Response], ok: int = 200
) -> tuple[list[float], int]:
    """Send `send(client, n)` at `rate` per second for `seconds`, each on a pooled thread with its own client:
    (the latencies in seconds, how many answers were not `ok`)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    local = threading.local()

    def one(n: int) -> None:
        nonlocal errors
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=30, headers=AUTH)
        started = time.perf_counter()
        answer = send(local.client, n)
        with lock:
            latencies.append(time.perf_counter() - started)
            errors += answer.status_code != ok

    with ThreadPoolExecutor(64) as pool:
        begin = time.perf_counter()
        for n in range(int(rate * seconds)):
            time.sleep(max(0.0, begin + n / rate - time.perf_counter()))
            pool.submit(one, n)
    return latencies, errors
