"""Losing a worker process: the local supervisor restarts a killed Celery main process (nothing lost, readiness
reports the gap), and a killed pool child's keys are taken over at once instead of after its lease."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.load import ended, identifier_patch
from tests.support.processes import free_port, started, wait_for, wait_http_ok, wait_progress
from tests.support.service import FAST_RECOVERY, Service, running_service
from tests.support.tokens import TokenIssuer

ASYNC = {"content-type": "application/json-patch+json", "prefer": "respond-async"}
SYNC = {"content-type": "application/json-patch+json"}


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stream(service: Service, resources: int, per_resource: int, halfway: threading.Event) -> None:
    def submit(r: int) -> None:
        with service.client() as client:
            for n in range(per_resource):
                if n == per_resource // 3:
                    halfway.set()
                assert client.patch(f"Patient/w{r}", content=identifier_patch(str(n)), headers=ASYNC).status_code == 202

    with ThreadPoolExecutor(max_workers=resources) as pool:
        list(pool.map(submit, range(resources)))


def _check_each_once(service: Service, resources: int, per_resource: int) -> None:
    with service.client() as client:
        for r in range(resources):
            values = [i["value"] for i in client.get(f"Patient/w{r}").json()["identifier"]]
            assert values == ["start"] + [str(n) for n in range(per_resource)], f"Patient/w{r}: {values}"


def _create(service: Service, resources: int) -> None:
    with service.client() as client:
        for r in range(resources):
            body = {"resourceType": "Patient", "id": f"w{r}", "identifier": [{"value": "start"}]}
            assert client.put(f"Patient/w{r}", json=body).status_code in (200, 201)


def test_the_supervisor_restarts_a_killed_worker_and_no_job_is_lost(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    port, issuer = free_port(), TokenIssuer(tmp_path / "jwks.json")
    env = {**FAST_RECOVERY, **issuer.env(), **isolated_env, "FHIR_PATCH_HTTP_PORT": str(port)}
    argv = [
        str(Path(sys.executable).parent / "fhir-patch"),
        "serve",
        "--log-dir",
        str(tmp_path / "logs"),
        "--workers",
        "1",
    ]
    resources, per_resource = 8, 30
    with started(argv, env, tmp_path / "serve.log") as serve:
        service = Service(f"http://127.0.0.1:{port}", env, issuer=issuer)
        wait_http_ok(f"{service.base}/readyz", timeout=120)
        _create(service, resources)
        halfway = threading.Event()
        load = threading.Thread(target=_stream, args=(service, resources, per_resource, halfway))
        load.start()
        assert halfway.wait(60)
        worker = next(pid for pid in _children(serve.pid) if "celery" in _command(pid) and " worker " in _command(pid))
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        _unready_then_ready(service)
        ready_after = time.monotonic() - killed_at
        load.join()
        with service.ops() as ops:
            wait_progress(lambda: ended(ops), resources * (per_resource + 1), "every job ended after the restart")
        recovered_after = time.monotonic() - killed_at
        _check_each_once(service, resources, per_resource)
        new_worker = [pid for pid in _children(serve.pid) if "celery" in _command(pid)]
        assert new_worker and worker not in new_worker and serve.poll() is None, "the supervisor kept running"
    jobs = resources * (per_resource + 1)
    print(
        json.dumps(
            {"jobs": jobs, "lost": 0, "ready_again_s": round(ready_after, 1), "all_ended_s": round(recovered_after, 1)}
        )
    )


def _unready_then_ready(service: Service) -> None:
    with service.anonymous(timeout=10) as anonymous:
        wait_for(lambda: anonymous.get("/readyz").status_code == 503, 30, "readiness to report the missing worker", 0.1)
        wait_for(lambda: anonymous.get("/readyz").status_code == 200, 120, "readiness after the restart", 0.2)


def test_a_killed_pool_child_does_not_stall_other_keys(isolated_env: dict[str, str], tmp_path: Path) -> None:
    """Sync PATCHes to other resources keep being answered while a pool child is killed mid-stream: the killed
    child's message comes back and its lease is taken over at once (not after the lease expires)."""
    env = {**isolated_env, "FHIR_PATCH_LEASE_SECONDS": "30", "FHIR_PATCH_SYNC_WAIT_SECONDS": "25"}
    resources, per_resource = 6, 30
    with running_service(env, tmp_path, workers=1, concurrency=2) as service:
        _create(service, resources)
        with service.client() as client:
            created = client.put("Patient/other", json={"resourceType": "Patient", "id": "other"})
            assert created.status_code in (200, 201)
        halfway = threading.Event()
        load = threading.Thread(target=_stream, args=(service, resources, per_resource, halfway))
        load.start()
        assert halfway.wait(60)
        children = _children(service.workers[0].pid)
        assert children, "the worker has pool children"
        os.kill(children[0], signal.SIGKILL)
        latencies = _sync_patch_latencies(service, 20)
        load.join()
        with service.ops() as ops:
            wait_progress(lambda: ended(ops), resources * (per_resource + 1) + 21, "every job ended")
        _check_each_once(service, resources, per_resource)
    median = sorted(latencies)[len(latencies) // 2]
    print(json.dumps({"sync_patches": len(latencies), "max_s": round(max(latencies), 2), "median_s": round(median, 3)}))
    assert max(latencies) < 20, latencies  # the lease is 30 s: nothing waited it out


def _sync_patch_latencies(service: Service, count: int) -> list[float]:
    """Seconds each of `count` synchronous PATCHes to Patient/other took (each must answer 200)."""
    latencies = []
    with service.client() as client:
        for n in range(count):
            started_at = time.monotonic()
            answer = client.patch(
                "Patient/other", json=[{"op": "add", "path": "/active", "value": n % 2 == 0}], headers=SYNC
            )
            latencies.append(time.monotonic() - started_at)
            assert answer.status_code == 200, answer.text
    return latencies
