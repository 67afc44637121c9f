"""The API process SIGKILLed twice under load and started again: what every client was told stays true.

Each client owns some resources and sends its appends to each in order, async, each with an Idempotency-Key,
retried with that key on transport errors and 5xx until answered 202 (as a client that lost its connection
would). Afterwards each resource holds exactly its acknowledged appends, once each, in acknowledgement order, and
no retry was refused. (tests/service/test_intake_crashes.py kills the intake before each of its steps in turn;
this shows the same end to end, with kills wherever they land.)"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.processes import api_argv, started, wait_http_ok, wait_progress
from tests.support.service import Service

RESOURCES, PER_RESOURCE, CLIENTS = 24, 20, 8
ASYNC = {"prefer": "respond-async", "content-type": "application/json-patch+json"}


def _append(value: str) -> bytes:
    return json.dumps([{"op": "add", "path": "/identifier/-", "value": {"value": value}}]).encode()


class _Load:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.acknowledged: dict[int, list[int]] = {r: [] for r in range(RESOURCES)}
        self.refused: list[str] = []
        self.lock = threading.Lock()

    def done(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.acknowledged.values())

    def client(self, c: int, deadline: float) -> None:
        with self.service.client(timeout=10) as client:
            for n in range(PER_RESOURCE):
                for r in range(c, RESOURCES, CLIENTS):
                    if self._send(client, r, n, deadline):
                        with self.lock:
                            self.acknowledged[r].append(n)

    def _send(self, client: httpx.Client, r: int, n: int, deadline: float) -> bool:
        headers = {**ASYNC, "idempotency-key": f"r{r}-{n}"}
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                answer = client.patch(f"Patient/r{r}", content=_append(str(n)), headers=headers)
                if answer.status_code == 202:
                    return True
                if answer.status_code < 500:
                    self.refused.append(f"r{r}-{n}: {answer.status_code} {answer.text[:300]}")
                    return False
            time.sleep(0.05)
        return False


@contextlib.contextmanager
def _api_killed_and_restarted(service: Service, load: _Load, tmp: Path) -> Iterator[list[int]]:
    """Kill the API at a third and two thirds of the load, each time starting a new one on the same port."""
    port = int(service.base.rsplit(":", 1)[1])
    kills: list[int] = []
    with contextlib.ExitStack() as stack:

        def killer() -> None:
            for n, at in enumerate((RESOURCES * PER_RESOURCE // 3, 2 * RESOURCES * PER_RESOURCE // 3)):
                wait_progress(load.done, at, f"{at} appends acknowledged")
                current = service.api
                assert current is not None
                current.kill()
                current.wait()
                kills.append(load.done())
                service.api = stack.enter_context(started(api_argv(port), service.env, tmp / f"api-{n + 1}.log"))
                # Serving again is enough: readiness also waits for a worker's ping, and under a busy suite the load
                # could end meanwhile, before the second kill (seen once).
                wait_http_ok(f"{service.base}/healthz", timeout=60)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        yield kills
        thread.join(timeout=120)


def test_the_api_killed_mid_load_loses_reorders_and_refuses_nothing(fresh_service: Service, tmp_path: Path) -> None:
    with fresh_service.client() as client:
        for r in range(RESOURCES):
            body = {"resourceType": "Patient", "id": f"r{r}", "identifier": [{"value": "start"}]}
            assert client.put(f"Patient/r{r}", json=body).status_code == 201
    load = _Load(fresh_service)
    with _api_killed_and_restarted(fresh_service, load, tmp_path) as kills:
        deadline = time.monotonic() + 300
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda c: load.client(c, deadline), range(CLIENTS)))
        assert len(kills) == 2, f"both kills landed under load: {kills}"
        assert load.refused == [], "a same-key retry is never refused"
        assert load.done() == RESOURCES * PER_RESOURCE, "every append was acknowledged in the end"
        _check_applied_in_acknowledgement_order(fresh_service, load)


def _check_applied_in_acknowledgement_order(service: Service, load: _Load) -> None:
    with service.client() as client:

        def applied() -> int:
            return sum(len(client.get(f"Patient/r{r}").json()["identifier"]) - 1 for r in range(RESOURCES))

        wait_progress(applied, RESOURCES * PER_RESOURCE, "every acknowledged append applied")
        for r in range(RESOURCES):
            values = [int(i["value"]) for i in client.get(f"Patient/r{r}").json()["identifier"][1:]]
            assert values == load.acknowledged[r], f"Patient/r{r}: once each, in acknowledgement order: {values}"
