"""Workers killed (SIGKILL) or paused past their lease (SIGSTOP) mid-stream: every job still ends exactly once."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from tests.support.load import all_ended, identifier_patch, wait_all_ended
from tests.support.processes import wait_for
from tests.support.service import Service
from worker.schedule.keys import RedisKeys

RESOURCES, PER_RESOURCE = 12, 40
ASYNC = {"content-type": "application/json-patch+json", "prefer": "respond-async"}


def _stream_with(service: Service, disturb: threading.Event) -> list[str]:
    """Create the resources, then send PER_RESOURCE patches to each (in order per resource) while `disturb` fires."""
    with service.client() as client:
        for r in range(RESOURCES):
            body = {"resourceType": "Patient", "id": f"k{r}", "identifier": [{"value": "start"}]}
            assert client.put(f"Patient/k{r}", json=body).status_code == 201
    locations: list[str] = []

    def submit(r: int) -> list[str]:
        with service.client() as client:
            out = []
            for n in range(PER_RESOURCE):
                if n == PER_RESOURCE // 4:
                    disturb.set()
                answer = client.patch(f"Patient/k{r}", content=identifier_patch(str(n)), headers=ASYNC)
                assert answer.status_code == 202, answer.text
                out.append(answer.headers["content-location"])
                time.sleep(0.01)
            return out

    with ThreadPoolExecutor(max_workers=RESOURCES) as pool:
        for batch in pool.map(submit, range(RESOURCES)):
            locations.extend(batch)
    return locations


def _check_exactly_once(service: Service) -> None:
    with service.client() as client, service.ops() as ops:
        wait_all_ended(ops, RESOURCES * (PER_RESOURCE + 1))
        for r in range(RESOURCES):
            patient = client.get(f"Patient/k{r}").json()
            values = [i["value"] for i in patient["identifier"]]
            assert values == ["start"] + [str(n) for n in range(PER_RESOURCE)], (
                f"Patient/k{r}: each patch exactly once, in order: {values}"
            )
            history = client.get(f"Patient/k{r}/_history", params={"_count": 1000}).json()
            assert [int(e["response"]["etag"][3:-1]) for e in history["entry"]] == list(range(PER_RESOURCE + 1, 0, -1))
            # Each version and its Provenance are one insert: a crash leaves neither one without the other.
            audit = client.get("Provenance", params={"target": f"Patient/k{r}", "_count": 1000}).json()
            targets = [e["resource"]["target"][0]["reference"] for e in audit["entry"]]
            assert targets == [f"Patient/k{r}/_history/{n}" for n in range(PER_RESOURCE + 1, 0, -1)], (
                f"Patient/k{r}: {targets}"
            )


def test_worker_killed_mid_stream(fresh_service: Service) -> None:
    disturb = threading.Event()
    landed: list[str] = []
    finished = threading.Event()
    thread = threading.Thread(target=_kill_mid_drain, args=(fresh_service, disturb, landed, finished), daemon=True)
    thread.start()
    _stream_with(fresh_service, disturb)
    with fresh_service.ops() as ops:  # the backlog is still being applied: the killer may look until it is done
        while thread.is_alive() and not all_ended(ops, RESOURCES * (PER_RESOURCE + 1)):
            time.sleep(0.1)
    with fresh_service.client() as client:  # no window yet (a fast machine): more work, elsewhere, until one opens
        client.put("Patient/extra", json={"resourceType": "Patient", "id": "extra"})
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            client.patch("Patient/extra", content=identifier_patch("x"), headers=ASYNC)
    finished.set()
    thread.join()
    assert landed, "the kill must land while the worker holds a lease (mid-drain)"
    _check_exactly_once(fresh_service)


def _kill_mid_drain(service: Service, disturb: threading.Event, landed: list[str], finished: threading.Event) -> None:
    """Freeze a worker, look at the leases its processes hold, and kill it only if it holds one: the kill then
    lands mid-drain for certain (a frozen process cannot finish the drain between the look and the kill)."""
    disturb.wait(30)
    store = redis.Redis.from_url(service.env["FHIR_PATCH_REDIS_URL"])
    pattern = RedisKeys(service.env["FHIR_PATCH_NAMESPACE"]).lease("*")
    n = 0
    while not landed and not finished.is_set():
        index = n % len(service.workers)
        pids = {str(p) for p in _process_tree(service.workers[index].pid)}
        service.signal_worker(index, signal.SIGSTOP)
        held = [
            k.decode()
            for k in store.scan_iter(pattern)
            if (store.get(k) or b"").decode().split("|")[0].rsplit(":", 1)[-1] in pids
        ]
        if held:
            service.signal_worker(index, signal.SIGKILL)  # the worker and its pool child
            landed.extend(held)
        else:
            service.signal_worker(index, signal.SIGCONT)
        n += 1
        time.sleep(0.05)


def _process_tree(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = {pid}
    for child in children.read_text().split() if children.exists() else []:
        found |= _process_tree(int(child))
    return found


def test_worker_paused_past_its_lease_then_resumed(fresh_service: Service) -> None:
    disturb = threading.Event()

    def pauser() -> None:
        disturb.wait(30)
        time.sleep(0.3)
        fresh_service.signal_worker(0, signal.SIGSTOP)
        time.sleep(5)  # lease is 2 s: the other worker takes its keys over
        fresh_service.signal_worker(0, signal.SIGCONT)

    thread = threading.Thread(target=pauser, daemon=True)
    thread.start()
    _stream_with(fresh_service, disturb)
    thread.join()
    _check_exactly_once(fresh_service)


def test_jobs_survive_redis_losing_its_data(fresh_service: Service) -> None:
    """Workers paused, patches accepted, then every Redis key of the deployment is gone (queues, payloads,
    Celery messages, copies): the reconciler puts the jobs back from MongoDB and they apply in order."""
    with fresh_service.client() as client:
        assert (
            client.put(
                "Patient/lost", json={"resourceType": "Patient", "id": "lost", "identifier": [{"value": "start"}]}
            ).status_code
            == 201
        )
        for n in range(len(fresh_service.workers)):
            fresh_service.signal_worker(n, signal.SIGSTOP)
        try:
            for n in range(5):
                assert client.patch("Patient/lost", content=identifier_patch(str(n)), headers=ASYNC).status_code == 202
            store = redis.Redis.from_url(fresh_service.env["FHIR_PATCH_REDIS_URL"])
            namespace = fresh_service.env["FHIR_PATCH_NAMESPACE"]
            lost = [key for key in store.scan_iter(f"{namespace}*") if b":metrics:" not in key]
            assert lost
            store.delete(*lost)  # (the reconciler's lock may expire on its own meanwhile)
            keys = RedisKeys(namespace)
            assert not store.exists(keys.queue("Patient/lost"), keys.payloads, namespace)
        finally:
            for n in range(len(fresh_service.workers)):
                fresh_service.signal_worker(n, signal.SIGCONT)
        wait_for(lambda: len(client.get("Patient/lost/_history").json()["entry"]) == 6, 60, "the lost jobs applied")
        values = [i["value"] for i in client.get("Patient/lost").json()["identifier"]]
        assert values == ["start", "0", "1", "2", "3", "4"]
