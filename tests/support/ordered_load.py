"""A load that can check per-resource order: client threads append numbered identifiers to Patients, each
patch retried under its own Idempotency-Key until acknowledged (202). Afterwards each resource must hold exactly
its acknowledged patches, in acknowledgement order (0 FIFO violations), and every acknowledged job must have
finished (0 unfinished). Used by the tests that take Redis away under load (test_redis_loss, test_sentinel)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.support.processes import wait_progress
from tests.support.service import Service

ASYNC = {"prefer": "respond-async", "content-type": "application/json-patch+json"}


def _append(value: str) -> bytes:
    return json.dumps([{"op": "add", "path": "/identifier/-", "value": {"value": value}}]).encode()


@dataclass
class OrderedLoad:
    service: Service
    resources: int = 24
    per_resource: int = 30
    clients: int = 8
    prefix: str = "r"  # the Patients' ids: prefix + number
    acknowledged: dict[str, int] = field(default_factory=dict)
    acknowledged_at: list[float] = field(default_factory=list)  # monotonic times of every 202
    others: list[Service] = field(default_factory=list)  # more stacks behind "the balancer", on the same stores
    retried: Counter[str] = field(default_factory=Counter)  # why a patch was sent again: status, or the error

    def create(self) -> None:
        with self.service.client() as client:
            for r in range(self.resources):
                body = {"resourceType": "Patient", "id": f"{self.prefix}{r}", "identifier": [{"value": "start"}]}
                assert client.put(f"Patient/{self.prefix}{r}", json=body).status_code in (200, 201)
        self.acknowledged = {f"{self.prefix}{r}": 0 for r in range(self.resources)}

    def run(self, fault: Callable[[], None], deadline_seconds: float = 240) -> None:
        """Send the load; once a third of it is acknowledged, run `fault` (in this thread) while it goes on."""
        third = threading.Event()
        deadline = time.monotonic() + deadline_seconds

        def client_share(c: int) -> None:
            stacks = [self.service, *self.others]
            stacks = stacks[c % len(stacks) :] + stacks[: c % len(stacks)]  # each client starts on its own stack
            with contextlib.ExitStack() as opened:
                clients = [opened.enter_context(self._client(stack)) for stack in stacks]
                for n in range(self.per_resource):
                    for r in range(c, self.resources, self.clients):
                        if self._send(clients, f"{self.prefix}{r}", n, deadline):
                            self.acknowledged[f"{self.prefix}{r}"] += 1
                    if n == self.per_resource // 3:
                        third.set()

        with ThreadPoolExecutor(max_workers=self.clients) as pool:
            futures = [pool.submit(client_share, c) for c in range(self.clients)]
            third.wait(120)
            fault()
            for future in futures:
                future.result()

    def _client(self, stack: Service) -> httpx.Client:
        """A client of `stack` with a token of the first stack's issuer (every stack trusts it)."""
        assert self.service.issuer is not None
        return httpx.Client(base_url=stack.fhir, timeout=30, trust_env=False, headers=self.service.issuer.bearer())

    def _send(self, clients: list[httpx.Client], rid: str, n: int, deadline: float) -> bool:
        """Until acknowledged: a stack that does not answer is left for the next one, as a balancer would."""
        attempt = 0
        while time.monotonic() < deadline:
            client = clients[attempt % len(clients)]
            attempt += 1
            try:
                answer = client.patch(
                    f"Patient/{rid}", content=_append(str(n)), headers={**ASYNC, "idempotency-key": f"{rid}-{n}"}
                )
            except httpx.HTTPError as exc:
                self.retried[type(exc).__name__] += 1
            else:
                if answer.status_code == 202:
                    self.acknowledged_at.append(time.monotonic())
                    return True
                assert answer.status_code in (503, 500), answer.text  # 500: never expected; counted below
                self.retried[str(answer.status_code)] += 1
            time.sleep(0.05)
        return False

    def longest_silence(self) -> float:
        """The longest time between two acknowledgements: how long intake stopped answering 202."""
        times = sorted(self.acknowledged_at)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def applied_values(self) -> dict[str, list[str]]:
        """Each resource's identifier values after the first, once every acknowledged patch is applied (or
        progress stops)."""
        total = sum(self.acknowledged.values())
        with self.service.client() as client:

            def applied() -> int:
                return sum(
                    len(client.get(f"Patient/{self.prefix}{r}").json()["identifier"]) - 1 for r in range(self.resources)
                )

            with contextlib.suppress(TimeoutError):
                wait_progress(applied, total, "acknowledged patches applied", stall_seconds=60)
            return {
                f"{self.prefix}{r}": [i["value"] for i in client.get(f"Patient/{self.prefix}{r}").json()["identifier"]][
                    1:
                ]
                for r in range(self.resources)
            }

    def report(self, values: dict[str, list[str]]) -> dict[str, object]:
        total = sum(self.acknowledged.values())
        violations = sum(
            sum(1 for a, b in zip(v, v[1:]) if int(b) < int(a)) + (len(v) - len(set(v))) for v in values.values()
        )
        unfinished = sum(
            self.acknowledged[r] - len(set(v)) for r, v in values.items() if len(set(v)) < self.acknowledged[r]
        )
        return {
            "resources": self.resources,
            "patches": self.resources * self.per_resource,
            "acknowledged": total,
            "not_acknowledged": self.resources * self.per_resource - total,
            "fifo_violations": violations,
            "duplicates": sum(len(v) - len(set(v)) for v in values.values()),
            "unfinished": unfinished,
            "retried": dict(self.retried),
        }
