"""The asynchronous interaction: 202, polling, the batch-response Bundle, cancel, expiry, idempotency, callbacks."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from api.group_answers import group_id_for
from tests.pipeline.conftest import CALLBACK_SECRET
from tests.support.processes import wait_for
from tests.support.service import Service, wait_jobs_final
from worker.model.clock import utc_now
from worker.settings import Settings
from worker.storage import Database

PATCH = {"content-type": "application/json-patch+json"}
ASYNC = {**PATCH, "prefer": "respond-async"}


def _patient(service: Service, pid: str) -> None:
    with service.client() as client:
        assert client.put(f"Patient/{pid}", json={"resourceType": "Patient", "id": pid}).status_code == 201


def test_async_patch_answers_202_then_a_batch_response_bundle(service: Service) -> None:
    _patient(service, "a1")
    with service.client() as client:
        accepted = client.patch(
            "Patient/a1", content=b'[{"op":"add","path":"/gender","value":"female"}]', headers=ASYNC
        )
        assert accepted.status_code == 202
        location = accepted.headers["content-location"]
        assert "/fhir/_async/" in location and accepted.json()["resourceType"] == "OperationOutcome"
        final = wait_jobs_final(client, [location])[location]
        assert final.status_code == 200
        bundle = final.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "batch-response"
        entry = bundle["entry"][0]
        assert entry["response"]["status"] == "200 OK" and entry["response"]["etag"] == 'W/"2"'
        assert entry["response"]["location"].endswith("/Patient/a1/_history/2") and entry["response"]["lastModified"]
        assert entry["resource"]["gender"] == "female"

        failing = client.patch("Patient/a1", content=b'[{"op":"remove","path":"/birthDate"}]', headers=ASYNC)
        failed = wait_jobs_final(client, [failing.headers["content-location"]])[failing.headers["content-location"]]
        response = failed.json()["entry"][0]["response"]
        assert response["status"].startswith("422") and response["outcome"]["issue"][0]["code"] == "not-found"


def test_pending_job_polls_202_with_progress_and_can_be_cancelled(service: Service) -> None:
    _patient(service, "a2")
    for n in range(len(service.workers)):
        service.signal_worker(n, signal.SIGSTOP)
    try:
        with service.client() as client:
            accepted = client.patch(
                "Patient/a2", content=b'[{"op":"add","path":"/gender","value":"male"}]', headers=ASYNC
            )
            location = accepted.headers["content-location"]
            pending = client.get(location)
            assert pending.status_code == 202 and pending.headers["x-progress"] and pending.headers["retry-after"]
            assert client.delete(location).status_code == 202
    finally:
        for n in range(len(service.workers)):
            service.signal_worker(n, signal.SIGCONT)
    with service.client() as client:
        # a later job on the same resource runs: the cancelled one was skipped, never applied
        after = client.patch("Patient/a2", content=b'[{"op":"add","path":"/gender","value":"other"}]', headers=PATCH)
        assert after.status_code == 200 and after.json()["meta"]["versionId"] == "2"
        gone = client.get(location)
        assert gone.status_code == 404 and gone.json()["resourceType"] == "OperationOutcome"
        assert client.delete(location).status_code == 404
        finished = client.patch("Patient/a2", content=b'[{"op":"add","path":"/active","value":true}]', headers=ASYNC)
        done = finished.headers["content-location"]
        wait_jobs_final(client, [done])
        too_late = client.delete(done)
        assert too_late.status_code == 409 and too_late.json()["issue"][0]["code"] == "conflict"


def test_finished_jobs_expire_after_the_retention(service: Service) -> None:
    _patient(service, "a3")
    with service.client() as client:
        location = client.patch(
            "Patient/a3", content=b'[{"op":"add","path":"/active","value":true}]', headers=ASYNC
        ).headers["content-location"]
        assert wait_jobs_final(client, [location])[location].status_code == 200
        wait_for(lambda: client.get(location).status_code == 404, 60, "the finished job to expire", interval=0.5)
        assert client.get(location).json()["issue"][0]["code"] == "not-found"


def test_idempotency_key_returns_the_first_job_and_refuses_a_different_body(service: Service) -> None:
    _patient(service, "a4")
    body = b'[{"op":"add","path":"/identifier","value":[{"value":"once"}]}]'
    with service.client() as client:
        first = client.patch("Patient/a4", content=body, headers={**ASYNC, "idempotency-key": "key-a4"})
        again = client.patch("Patient/a4", content=body, headers={**ASYNC, "idempotency-key": "key-a4"})
        assert first.headers["content-location"] == again.headers["content-location"]
        sync_again = client.patch("Patient/a4", content=body, headers={**PATCH, "idempotency-key": "key-a4"})
        assert sync_again.status_code == 200 and sync_again.headers["etag"] == 'W/"2"'
        other = client.patch(
            "Patient/a4",
            content=b'[{"op":"add","path":"/active","value":true}]',
            headers={**ASYNC, "idempotency-key": "key-a4"},
        )
        assert other.status_code == 422 and other.json()["issue"][0]["expression"] == ["Idempotency-Key"]
        assert client.get("Patient/a4").json()["meta"]["versionId"] == "2"


class Receiver:
    """A loopback HTTP endpoint that fails the first `failures` deliveries with 500."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.deliveries: list[tuple[int, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = 500 if len(receiver.deliveries) < receiver.failures else 204
                receiver.deliveries.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=2)
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_a_batch_resent_after_its_api_died_mid_intake_is_taken_and_answered(service: Service) -> None:
    """The API died after opening a batch's group and before queuing its entries (as a SIGKILL there leaves it):
    the same batch sent again with its Idempotency-Key is taken whole and answered with its batch-response, not
    left pending for ever."""
    key = "batch-whose-intake-died"
    database = Database.open(Settings.from_env(service.env))
    try:
        assert database.groups.open(group_id_for(key, "tester"), "batch", utc_now(), {}, "tester")
    finally:
        database.close()
    entries = [
        {
            "resource": {"resourceType": "Patient", "id": f"died{n}"},
            "request": {"method": "PUT", "url": f"Patient/died{n}"},
        }
        for n in range(3)
    ]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    with service.client() as client:
        answer = client.post("", json=bundle, headers={"idempotency-key": key})
        assert answer.status_code == 200, answer.text
        assert [e["response"]["status"] for e in answer.json()["entry"]] == ["201 Created"] * 3
        assert client.get("Patient/died2").status_code == 200


def test_callback_is_signed_and_retried_after_500s(service: Service, receiver: Receiver) -> None:
    _patient(service, "a5")
    with service.client() as client:
        accepted = client.patch(
            "Patient/a5",
            content=b'[{"op":"add","path":"/active","value":true}]',
            headers={**ASYNC, "x-callback-url": receiver.url},
        )
        assert accepted.status_code == 202
    wait_for(lambda: any(status == 204 for status, _, _ in receiver.deliveries), 30, "a successful delivery")
    time.sleep(1.0)
    statuses = [status for status, _, _ in receiver.deliveries]
    assert statuses == [500, 500, 204], "retried after each 500, then stopped"
    ids = {headers["webhook-id"] for _, headers, _ in receiver.deliveries}
    assert len(ids) == 1, "the same webhook-id on every attempt, so the receiver can drop repeats"
    _, headers, body = receiver.deliveries[-1]
    Webhook(CALLBACK_SECRET).verify(body, headers)  # raises if the signature is wrong
    bundle = json.loads(body)
    assert bundle["type"] == "batch-response" and bundle["entry"][0]["response"]["etag"] == 'W/"2"'


def test_callback_outside_the_allow_list_is_refused_at_intake(service: Service) -> None:
    _patient(service, "a6")
    with service.client() as client:
        refused = client.patch(
            "Patient/a6",
            content=b'[{"op":"add","path":"/active","value":true}]',
            headers={**ASYNC, "x-callback-url": "http://example.org/hook"},
        )
        assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["X-Callback-URL"]
        assert client.get("Patient/a6").json()["meta"]["versionId"] == "1"
