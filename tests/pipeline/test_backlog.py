"""A backlog never makes itself worse: a 2,500-line feed of creates over 2,500 new resources costs at most one
drain per key (plus a small constant); the reconciler revives nothing that is merely waiting. (2,500 keys wait
several times the 2 s lease here; bench/scale.py runs the same feed of creates to 100,000.)"""

from __future__ import annotations

import json
from pathlib import Path

import redis

from tests.support.processes import wait_progress
from tests.support.service import running_service

LINES = 2_500
SLACK = 50


def test_a_feed_of_creates_costs_one_drain_per_key(isolated_env: dict[str, str], tmp_path: Path) -> None:
    # A 2 s lease and a reconciler pass every 0.5 s (the test services' defaults): the old rule revived any key
    # whose message had waited more than a lease, which a backlog of thousands of keys makes most of them.
    feed = _creates(LINES)
    with running_service(isolated_env, tmp_path, workers=2) as service, service.client(timeout=600) as client:
        answer = client.post("$bulk-submit", content=feed, headers={"content-type": "application/fhir+ndjson"})
        assert answer.status_code == 202, answer.text
        location = answer.headers["content-location"]

        def applied() -> int:
            counts = {p["name"]: p.get("valueInteger") for p in client.get(location).json()["parameter"]}
            return int(counts["applied"]) + int(counts["failed"])

        wait_progress(applied, LINES, "feed of creates applied")
        counts = redis.Redis.from_url(service.env["FHIR_PATCH_REDIS_URL"]).hgetall(
            f"{service.env['FHIR_PATCH_NAMESPACE']}:metrics:counts"
        )
    got = {k.decode(): int(float(v)) for k, v in counts.items()}
    print(json.dumps({"lines": LINES, **{k: got.get(k, 0) for k in ("drains", "idle_drains", "revived", "applied")}}))
    assert got["applied"] == LINES
    assert got["drains"] <= LINES + SLACK, got
    assert got.get("idle_drains", 0) <= SLACK, got
    assert got.get("revived", 0) <= SLACK, got


def _creates(lines: int) -> bytes:
    return "\n".join(
        json.dumps(
            {
                "resource": {"resourceType": "Organization", "id": f"o{n}", "name": f"org {n}"},
                "request": {"method": "PUT", "url": f"Organization/o{n}"},
            }
        )
        for n in range(lines)
    ).encode()
