"""Per-resource order survives the loss of Redis: a load runs while the service's Redis is SIGKILLed and restarted
empty. Every patch is retried under its own Idempotency-Key until acknowledged (202); afterwards each resource
must hold exactly its acknowledged patches, in acknowledgement order (0 FIFO violations), and every acknowledged
job must have finished (0 unfinished)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, provision_module, wait_for, wait_progress
from tests.support.service import Service, running_service

RESOURCES, PER_RESOURCE, CLIENTS = 24, 30, 8
ASYNC = {"prefer": "respond-async", "content-type": "application/json-patch+json"}


def _redis_argv(port: int, folder: Path) -> list[str]:
    binary = (
        subprocess.run(
            ["bash", str(Path(provision_module().__file__).parent / "ensure-redis.sh")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "no",
    ]


@contextlib.contextmanager
def own_redis(tmp: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    port = free_port()
    procs = [subprocess.Popen(_redis_argv(port, tmp), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    try:
        yield port, procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _append(value: str) -> bytes:
    return json.dumps([{"op": "add", "path": "/identifier/-", "value": {"value": value}}]).encode()


def _send_until_acknowledged(client: httpx.Client, rid: str, n: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            answer = client.patch(
                f"Patient/{rid}", content=_append(str(n)), headers={**ASYNC, "idempotency-key": f"{rid}-{n}"}
            )
            if answer.status_code == 202:
                return True
            assert answer.status_code in (503, 500), answer.text  # 500: never expected; kept visible by the count below
        time.sleep(0.05)
    return False


@pytest.mark.services
def test_order_and_completion_survive_redis_killed_and_restarted_empty(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    with own_redis(tmp_path) as (port, procs):
        env = {**isolated_env, "FHIR_PATCH_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        wait_for(lambda: _ping(port), 30, "own Redis up")
        with running_service(env, tmp_path, workers=2) as service:
            report = _load_across_a_redis_loss(service, port, procs, tmp_path)
    print(json.dumps(report))
    assert report["not_acknowledged"] == 0
    assert report["acknowledged_before_kill"] > 0 and report["queues_rebuilt"] >= 1, (
        "the loss landed mid-load and was noticed"
    )
    assert report["fifo_violations"] == 0, report
    assert report["unfinished"] == 0, report


def _ping(port: int) -> bool:
    import redis

    return bool(redis.Redis(port=port, socket_timeout=0.5).ping())


def _create_resources(service: Service) -> None:
    with service.client() as client:
        for r in range(RESOURCES):
            body = {"resourceType": "Patient", "id": f"r{r}", "identifier": [{"value": "start"}]}
            assert client.put(f"Patient/r{r}", json=body).status_code in (200, 201)


def _kill_redis_under_backlog(
    service: Service, port: int, procs: list[subprocess.Popen[bytes]], tmp: Path, acknowledged: dict[str, int]
) -> tuple[int, float]:
    """Freeze the workers, kill Redis with everything in it, start an empty one, let new patches in, thaw: the
    jobs acknowledged before the kill and when Redis came back."""
    for n in range(len(service.workers)):  # nothing applies for a while: acknowledged jobs wait in the queues
        service.signal_worker(n, signal.SIGSTOP)
    time.sleep(1.0)
    backlog = sum(acknowledged.values())
    procs[0].send_signal(signal.SIGKILL)  # Redis dies with everything: queues, payloads, broker messages, marker
    procs[0].wait()
    time.sleep(0.5)
    procs.append(subprocess.Popen(_redis_argv(port, tmp), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    recovered_at = time.monotonic()
    time.sleep(1.0)  # new patches are acknowledged on the empty Redis before any worker runs again
    for n in range(len(service.workers)):
        service.signal_worker(n, signal.SIGCONT)
    return backlog, recovered_at


def _applied_values(service: Service, total: int) -> dict[str, list[str]]:
    """Each resource's identifier values after the first, once every acknowledged patch is applied (or progress
    stops)."""
    with service.client() as client:

        def applied() -> int:
            return sum(len(client.get(f"Patient/r{r}").json()["identifier"]) - 1 for r in range(RESOURCES))

        with contextlib.suppress(TimeoutError):
            wait_progress(applied, total, "acknowledged patches applied", stall_seconds=60)
        return {
            f"r{r}": [i["value"] for i in client.get(f"Patient/r{r}").json()["identifier"]][1:]
            for r in range(RESOURCES)
        }


def _load_across_a_redis_loss(
    service: Service, port: int, procs: list[subprocess.Popen[bytes]], tmp: Path
) -> dict[str, object]:
    _create_resources(service)
    acknowledged = {f"r{r}": 0 for r in range(RESOURCES)}
    sent = threading.Event()
    deadline = time.monotonic() + 240

    def client_share(c: int) -> None:
        with service.client() as client:
            for n in range(PER_RESOURCE):
                for r in range(c, RESOURCES, CLIENTS):
                    if _send_until_acknowledged(client, f"r{r}", n, deadline):
                        acknowledged[f"r{r}"] += 1
                if n == PER_RESOURCE // 3:
                    sent.set()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(client_share, c) for c in range(CLIENTS)]
        sent.wait(120)
        backlog, recovered_at = _kill_redis_under_backlog(service, port, procs, tmp, acknowledged)
        for future in futures:
            future.result()
    total = sum(acknowledged.values())
    values = _applied_values(service, total)
    return _report(service, acknowledged, values, backlog, recovered_at)


def _report(
    service: Service, acknowledged: dict[str, int], values: dict[str, list[str]], backlog: int, recovered_at: float
) -> dict[str, object]:
    total = sum(acknowledged.values())
    violations = sum(
        sum(1 for a, b in zip(v, v[1:]) if int(b) < int(a)) + (len(v) - len(set(v))) for v in values.values()
    )
    unfinished = sum(acknowledged[r] - len(set(v)) for r, v in values.items() if len(set(v)) < acknowledged[r])
    rebuilt = sum("Redis was out of sync" in p.read_text() for p in service.log_dir.glob("worker*.log"))
    return {
        "resources": RESOURCES,
        "patches": RESOURCES * PER_RESOURCE,
        "acknowledged": total,
        "acknowledged_before_kill": backlog,
        "queues_rebuilt": rebuilt,
        "not_acknowledged": RESOURCES * PER_RESOURCE - total,
        "fifo_violations": violations,
        "unfinished": unfinished,
        "seconds_after_restart": round(time.monotonic() - recovered_at, 1),
    }
