"""A feed's cost is bounded: refused lines are kept per block (not one document per line), and a feed longer
than FHIR_PATCH_MAX_FEED_LINES is cut at the cap with 413 and X-Accepted-Lines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pymongo
import pytest

from tests.support.processes import wait_progress
from tests.support.service import Service, service_of_its_own

NDJSON = {"content-type": "application/fhir+ndjson"}
CAP = 2100  # above the refused-lines test's 2,000 lines; each line up to the cap is applied, so it sets the cost


@pytest.fixture(scope="module")
def capped(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    settings = {"FHIR_PATCH_MAX_FEED_LINES": str(CAP)}
    with service_of_its_own(service_env, tmp_path_factory.mktemp("capped"), settings) as running:
        yield running


def _documents(service: Service) -> int:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(service.env["FHIR_PATCH_MONGODB_URI"])
    try:
        db = client[service.env["FHIR_PATCH_DATABASE"]]
        return sum(db[name].estimated_document_count() for name in db.list_collection_names())
    finally:
        client.close()


def test_refused_lines_cost_a_document_per_block(capped: Service) -> None:
    before = _documents(capped)
    with capped.client(timeout=120) as client:
        answer = client.post("$bulk-submit", content=b"{}\n" * 2000, headers=NDJSON)
        assert answer.status_code == 202, answer.text
        location = answer.headers["content-location"]
        results = [json.loads(line) for line in client.get(f"{location}/results").text.splitlines()]
        started = time.monotonic()
        assert client.get(location).status_code == 200
        poll_seconds = time.monotonic() - started
    assert [r["line"] for r in results] == list(range(1, 2001))
    assert all(
        r["status"].startswith("400") and r["outcome"]["issue"][0]["expression"][0] == f"line {r['line']}"
        for r in results
    )
    grown = _documents(capped) - before
    print(json.dumps({"refused_lines": 2000, "documents_added": grown, "poll_seconds": round(poll_seconds, 3)}))
    assert grown <= 20, f"{grown} documents for 2000 refused lines"


def test_a_feed_over_the_cap_is_cut_there_with_413(capped: Service) -> None:
    lines = [
        json.dumps(
            {
                "request": {"method": "PUT", "url": f"Basic/cap{n}"},
                "resource": {"resourceType": "Basic", "id": f"cap{n}", "code": {"text": "x"}},
            }
        )
        for n in range(CAP + 100)
    ]
    with capped.client(timeout=300) as client:
        answer = client.post("$bulk-submit", content=("\n".join(lines) + "\n").encode(), headers=NDJSON)
        assert answer.status_code == 413, answer.text
        assert answer.headers["x-accepted-lines"] == str(CAP)
        issue = answer.json()["issue"][0]
        assert issue["code"] == "too-costly" and issue["expression"] == [f"line {CAP + 1}"]
        location = answer.headers["content-location"]
        wait_progress(
            lambda: 1 if client.get(location).status_code == 200 else 0, 1, "the capped feed to end", stall_seconds=120
        )
        assert client.get(f"Basic/cap{CAP - 1}").status_code == 200
        assert client.get(f"Basic/cap{CAP}").status_code == 404, "nothing past the cap was taken"
