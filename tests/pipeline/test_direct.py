"""A synchronous write on an idle resource is applied by the API process itself (worker/submission/direct.py):
it is answered with every worker stopped. A write on a resource with jobs queued waits behind them, in arrival
order, and a job that arrives while the API holds the key queues behind it."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

import httpx
import redis

from tests.support.processes import wait_for
from tests.support.service import Service, wait_jobs_final
from worker.schedule.keys import RedisKeys

PATCH = {"content-type": "application/json-patch+json"}


def _set_gender(value: str) -> bytes:
    return f'[{{"op":"add","path":"/gender","value":"{value}"}}]'.encode()


def test_an_idle_resource_is_written_with_every_worker_stopped_and_a_busy_one_waits_its_turn(
    service: Service,
) -> None:
    for n in range(len(service.workers)):
        service.signal_worker(n, signal.SIGSTOP)
    answers: dict[str, Any] = {}
    try:
        with service.client() as client:
            created = client.put("Patient/dx1", json={"resourceType": "Patient", "id": "dx1"})
            assert created.status_code == 201 and created.headers["etag"] == 'W/"1"', created.text
            patched = client.patch("Patient/dx1", content=_set_gender("female"), headers=PATCH)
            assert patched.status_code == 200 and patched.headers["etag"] == 'W/"2"', patched.text
            assert patched.json()["gender"] == "female"
            refused = client.patch("Patient/dx1", content=b'[{"op":"remove","path":"/birthDate"}]', headers=PATCH)
            assert refused.status_code == 422 and refused.json()["issue"][0]["expression"], refused.text
            queued = client.patch(
                "Patient/dx1", content=_set_gender("male"), headers={**PATCH, "prefer": "respond-async"}
            )
            assert queued.status_code == 202, "asynchronous: through the queue"

            def behind_the_queue() -> None:
                with service.client() as waiting:
                    answers["later"] = waiting.patch("Patient/dx1", content=_set_gender("other"), headers=PATCH)

            later = threading.Thread(target=behind_the_queue)
            later.start()
            wait_for(lambda: _queue_depth(service, "dx1") == 2, 30, "the later PATCH to queue behind the first")
            assert "later" not in answers, "a resource with a job queued is not written by the API"
    finally:
        for n in range(len(service.workers)):
            service.signal_worker(n, signal.SIGCONT)
    later.join(60)
    _applied_in_arrival_order(service, queued.headers["content-location"], answers["later"])


def _applied_in_arrival_order(service: Service, queued: str, later: httpx.Response) -> None:
    with service.client() as client:
        wait_jobs_final(client, [queued])
        assert later.status_code == 200 and later.headers["etag"] == 'W/"4"'
        history = client.get("Patient/dx1/_history").json()
        genders = [e["resource"].get("gender") for e in sorted(history["entry"], key=_version)]
        assert genders == [None, "female", "male", "other"], "in arrival order"
        again = client.patch("Patient/dx1", content=_set_gender("unknown"), headers=PATCH)
        assert again.status_code == 200 and again.headers["etag"] == 'W/"5"'
        provenance = client.get("Provenance", params={"target": "Patient/dx1/_history/5"})
        assert provenance.status_code == 200 and provenance.json()["entry"], provenance.text
    copy = RedisKeys(service.env["FHIR_PATCH_NAMESPACE"]).copy("default/Patient/dx1")
    with contextlib.closing(redis.Redis.from_url(service.env["FHIR_PATCH_REDIS_URL"])) as redis_client:
        assert redis_client.hget(copy, "v") == b"5", "the direct write's copy moved forward in its settle step"


def _version(entry: dict[str, Any]) -> int:
    return int(entry["resource"]["meta"]["versionId"])


def _queue_depth(service: Service, resource_id: str) -> int:
    queue = RedisKeys(service.env["FHIR_PATCH_NAMESPACE"]).queue(f"default/Patient/{resource_id}")
    with contextlib.closing(redis.Redis.from_url(service.env["FHIR_PATCH_REDIS_URL"])) as client:
        return int(client.llen(queue))
