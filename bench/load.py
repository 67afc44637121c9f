"""End-to-end load benchmark of the patch service; prints JSON.

    python bench/load.py [--workers 2] [--patches 4000] [--resources 400] [--rate 50] [--seconds 20]

Starts its own Redis and MongoDB-protocol server (scripts/provision.py), the
API and N Celery worker processes, then measures:

- end_to_end: asynchronous submission of a stream spread over many
  resources until every job has ended: applied patches per second;
- stages: the same stream with the workers paused while it is submitted
  (intake alone: accepted per second), then resumed (workers alone: applied
  per second); the slower of the two is the stage that limits throughput;
- sync_latency: synchronous PATCH at a fixed request rate (open loop: a
  request is sent every 1/rate seconds whatever the answers do), p50/p99.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import AUTH, counts, open_loop, running, wait_ended  # noqa: E402

PATCH = {"content-type": "application/json-patch+json"}


def submit_stream(base: str, patches: int, resources: int, clients: int, prefix: str) -> float:
    """Send `patches` async PATCHes round-robin over the resources; returns seconds taken."""
    body = json.dumps([{"op": "add", "path": "/identifier/-", "value": {"value": "x"}}]).encode()
    headers = {**PATCH, "prefer": "respond-async"}

    def client_share(k: int) -> None:
        with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=60, headers=AUTH) as client:
            for n in range(k, patches, clients):
                client.patch(f"Patient/{prefix}{n % resources}", content=body, headers=headers).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_share, range(clients)))
    return time.perf_counter() - started


def create_resources(base: str, resources: int, prefix: str) -> None:
    with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=60, headers=AUTH) as client:
        for r in range(resources):
            client.put(
                f"Patient/{prefix}{r}",
                json={"resourceType": "Patient", "id": f"{prefix}{r}", "identifier": [{"value": "0"}]},
                headers={"prefer": "respond-async"},
            ).raise_for_status()
    wait_ended(base, counts(base)["accepted"])


def end_to_end(base: str, patches: int, resources: int, clients: int) -> dict[str, Any]:
    create_resources(base, resources, "e")
    before = counts(base)
    started = time.perf_counter()
    submit_seconds = submit_stream(base, patches, resources, clients, "e")
    wait_ended(base, before["accepted"] + patches)
    total = time.perf_counter() - started
    return {
        "patches": patches,
        "resources": resources,
        "clients": clients,
        "seconds": round(total, 2),
        "applied_per_second": round(patches / total, 1),
        "submission_seconds": round(submit_seconds, 2),
    }


def stages(
    base: str, workers: list[subprocess.Popen[bytes]], patches: int, resources: int, clients: int
) -> dict[str, Any]:
    create_resources(base, resources, "s")
    before = counts(base)
    for proc in workers:
        os.killpg(proc.pid, signal.SIGSTOP)
    try:
        intake_seconds = submit_stream(base, patches, resources, clients, "s")
    finally:
        started = time.perf_counter()
        for proc in workers:
            os.killpg(proc.pid, signal.SIGCONT)
    wait_ended(base, before["accepted"] + patches)
    drain_seconds = time.perf_counter() - started
    intake, drain = patches / intake_seconds, patches / drain_seconds
    return {
        "intake_accepted_per_second": round(intake, 1),
        "workers_applied_per_second": round(drain, 1),
        "limiting_stage": "intake (API + MongoDB accept)" if intake < drain else "workers (apply + MongoDB commit)",
    }


def sync_latency(base: str, rate: float, seconds: float, resources: int) -> dict[str, Any]:
    create_resources(base, resources, "l")
    body = json.dumps([{"op": "replace", "path": "/identifier/0/value", "value": "y"}]).encode()
    total = int(rate * seconds)
    latencies, errors = open_loop(
        base, rate, seconds, lambda client, n: client.patch(f"Patient/l{n % resources}", content=body, headers=PATCH)
    )
    ordered = sorted(latencies)
    return {
        "rate_per_second": rate,
        "requests": total,
        "errors": errors,
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--patches", type=int, default=4000)
    parser.add_argument("--resources", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, running(args.workers, Path(tmp)) as (base, procs):
        workers = procs[:-1]
        report = {
            "workers": args.workers,
            "cpus": os.cpu_count(),
            "end_to_end": end_to_end(base, args.patches, args.resources, args.clients),
            "stages": stages(base, workers, args.patches, args.resources, args.clients),
            "sync_latency": sync_latency(base, args.rate, args.seconds, 50),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
