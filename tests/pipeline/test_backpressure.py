"""Backpressure: a client's unfinished jobs are capped (429), the whole service too (503), and a feed that crosses
the cap stops at a line boundary and resumes with the same Idempotency-Key, each line accepted once."""

from __future__ import annotations

import json
import signal
import time
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.processes import wait_for, wait_progress
from tests.support.service import Service, running_service

PER_CLIENT, TOTAL = 5, 8
ASYNC = {"prefer": "respond-async", "content-type": "application/json-patch+json"}
NDJSON = {"content-type": "application/fhir+ndjson"}


@pytest.fixture()
def limited(isolated_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    env = {
        **isolated_env,
        "FHIR_PATCH_MAX_UNFINISHED_PER_CLIENT": str(PER_CLIENT),
        "FHIR_PATCH_MAX_QUEUE_DEPTH": str(TOTAL),
    }
    with running_service(env, tmp_path, workers=1) as service:
        yield service


def _append(value: str) -> bytes:
    return json.dumps([{"op": "add", "path": "/identifier/-", "value": {"value": value}}]).encode()


def _values(client: httpx.Client, rid: str) -> list[str]:
    return [i["value"] for i in client.get(f"Patient/{rid}").json()["identifier"]]


def _wait_values(client: httpx.Client, rid: str, count: int) -> None:
    wait_progress(lambda: len(_values(client, rid)), count, f"Patient/{rid} to have {count} identifiers")


def _wait_no_unfinished(service: Service) -> None:
    store = redis.Redis.from_url(service.env["FHIR_PATCH_REDIS_URL"])
    key = f"{service.env['FHIR_PATCH_NAMESPACE']}:unfinished"
    wait_progress(lambda: -int(store.hget(key, "total") or 0), 0, "every job's place given back")


def test_client_and_service_limits(limited: Service) -> None:
    with (
        limited.client(sub="root") as admin,
        limited.client(sub="a", scope="system/*.cruds") as a,
        limited.client(sub="b", scope="system/*.cruds") as b,
        limited.client(sub="c", scope="system/*.cruds") as c,
    ):
        start = {"resourceType": "Patient", "id": "bp", "identifier": [{"value": "start"}]}
        assert admin.put("Patient/bp", json=start).status_code == 201
        _wait_no_unfinished(limited)  # the PUT gives its place back a step after it answers
        limited.signal_worker(0, signal.SIGSTOP)  # nothing finishes from here on
        try:
            assert [
                a.patch("Patient/bp", content=_append(f"a{n}"), headers=ASYNC).status_code for n in range(PER_CLIENT)
            ] == [202] * 5
            over = a.patch("Patient/bp", content=_append("a-over"), headers=ASYNC)
            assert over.status_code == 429 and int(over.headers["retry-after"]) > 0
            assert over.json()["issue"][0]["code"] == "throttled"
            b_codes = [b.patch("Patient/bp", content=_append(f"b{n}"), headers=ASYNC).status_code for n in range(3)]
            assert b_codes == [202] * 3
            full = b.patch("Patient/bp", content=_append("b-over"), headers=ASYNC)
            assert full.status_code == 503 and "retry-after" in full.headers
            _bundles_are_refused_whole(c)
        finally:
            limited.signal_worker(0, signal.SIGCONT)
        _wait_values(admin, "bp", 1 + PER_CLIENT + 3)
        assert _values(admin, "bp") == ["start", *(f"a{n}" for n in range(5)), "b0", "b1", "b2"], (
            "refused requests never apply"
        )
        assert admin.get("Patient/bq").status_code == 404
        # Every place is given back once the jobs finish: the same client may submit again.
        wait_for(
            lambda: a.patch("Patient/bp", content=_append("a-again"), headers=ASYNC).status_code == 202,
            30,
            "room again",
        )


def _binary_patch_line(url: str, patch: bytes) -> str:
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": b64encode(patch).decode()}
    return json.dumps({"request": {"method": "PATCH", "url": url}, "resource": binary})


def _resend_until_taken(admin: httpx.Client, feeder: httpx.Client, feed: bytes, key: dict[str, str]) -> None:
    """Resend after the accepted lines drain, until the whole feed is in (fail only without progress)."""
    accepted, stalled = PER_CLIENT, 0
    while True:
        _wait_values(admin, "bf", 1 + accepted)
        again = feeder.post("$bulk-submit", content=feed, headers=key)
        if again.status_code == 202:
            return
        assert again.status_code == 429, again.text
        taken = int(again.headers["x-accepted-lines"])
        stalled = 0 if taken > accepted else stalled + 1
        assert stalled < 50, "resending the feed stopped taking lines"
        accepted = taken
        time.sleep(0.1)  # a job's place comes back a step after its effect is visible


def _bundles_are_refused_whole(client: httpx.Client) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "bq"}, "request": {"method": "PUT", "url": "Patient/bq"}}
        ],
    }
    assert client.post("", json=batch, headers={"prefer": "respond-async"}).status_code == 503
    assert client.post("", json={**batch, "type": "transaction"}).status_code == 503


def test_a_feed_that_crosses_the_limit_stops_at_a_line_and_resumes(limited: Service) -> None:
    feed = "\n".join(_binary_patch_line("Patient/bf", _append(f"line-{n}")) for n in range(1, 13)).encode()
    key = {**NDJSON, "idempotency-key": "resumable-feed"}
    with limited.client(sub="root") as admin, limited.client(sub="feeder", scope="system/*.cruds") as feeder:
        start = {"resourceType": "Patient", "id": "bf", "identifier": [{"value": "start"}]}
        assert admin.put("Patient/bf", json=start).status_code == 201
        _wait_no_unfinished(limited)
        limited.signal_worker(0, signal.SIGSTOP)
        try:
            first = feeder.post("$bulk-submit", content=feed, headers=key)
        finally:
            limited.signal_worker(0, signal.SIGCONT)
        assert first.status_code == 429, first.text
        assert first.headers["x-accepted-lines"] == str(PER_CLIENT)
        assert first.json()["issue"][0]["expression"] == [f"line {PER_CLIENT + 1}"]
        _resend_until_taken(admin, feeder, feed, key)
        _wait_values(admin, "bf", 13)
        assert _values(admin, "bf") == ["start", *(f"line-{n}" for n in range(1, 13))], "each line once, in line order"
