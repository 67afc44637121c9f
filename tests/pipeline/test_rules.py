"""Service rules of #11: no-op patches, search and conditional targets by identifier and _id, synchronous batches
that wait for their entries, transactions with nothing to write, and answers that never echo a forged Host."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

from devkit.fhirpath import fhirpath_replace
from tests.support.processes import wait_progress
from tests.support.service import Service

JSON_PATCH = {"content-type": "application/json-patch+json"}
FHIR_JSON = {"content-type": "application/fhir+json"}
NDJSON = {"content-type": "application/fhir+ndjson"}
XML_PATCH = {"content-type": "application/xml-patch+xml"}


def _parameters(*operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts} for parts in operations]}


def _replace_gender(value: str) -> dict[str, Any]:
    return fhirpath_replace("Patient.gender", {"valueCode": value})


NO_OPS = {
    "JSON Patch": ('[{"op":"replace","path":"/gender","value":"male"}]', JSON_PATCH),
    "JSON Patch test only": ('[{"op":"test","path":"/gender","value":"male"}]', JSON_PATCH),
    "FHIRPath Patch": (json.dumps(_replace_gender("male")), FHIR_JSON),
    "XML Patch": (
        '<Patch xmlns="http://hl7.org/fhir"><replace sel="/Patient/gender/@value">male</replace></Patch>',
        XML_PATCH,
    ),
}


def _versions(client: httpx.Client, key: str) -> int:
    return int(client.get(f"{key}/_history").json()["total"])


@pytest.mark.parametrize("kind", NO_OPS)
def test_a_patch_that_changes_nothing_makes_no_new_version(service: Service, kind: str) -> None:
    body, headers = NO_OPS[kind]
    rid = "noop-" + kind.replace(" ", "-").lower()
    with service.client() as client:
        assert (
            client.put(f"Patient/{rid}", json={"resourceType": "Patient", "id": rid, "gender": "male"}).status_code
            == 201
        )
        answer = client.patch(f"Patient/{rid}", content=body.encode(), headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["etag"] == 'W/"1"' and answer.json()["meta"]["versionId"] == "1"
        assert _versions(client, f"Patient/{rid}") == 1
        queued = client.patch(f"Patient/{rid}", content=body.encode(), headers={**headers, "prefer": "respond-async"})
        assert queued.status_code == 202
        result = _poll(client, queued.headers["content-location"])
        outcome = result["entry"][0]["response"]["outcome"]
        assert result["entry"][0]["response"]["etag"] == 'W/"1"'
        assert any("changed nothing" in i["diagnostics"] for i in outcome["issue"]), outcome
        assert _versions(client, f"Patient/{rid}") == 1


def _poll(client: httpx.Client, location: str) -> dict[str, Any]:
    answers: list[httpx.Response] = []
    wait_progress(
        lambda: (answers.append(client.get(location)) or answers[-1].status_code == 200) and 1 or 0,
        1,
        "the job to finish",
        stall_seconds=60,
    )
    return dict(answers[-1].json())


def test_no_op_in_a_batch_and_in_a_feed(service: Service) -> None:
    patch = base64.b64encode(b'[{"op":"replace","path":"/gender","value":"male"}]').decode()
    entry = {
        "request": {"method": "PATCH", "url": "Patient/noop-b"},
        "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch},
    }
    with service.client() as client:
        client.put("Patient/noop-b", json={"resourceType": "Patient", "id": "noop-b", "gender": "male"})
        batch = client.post("", json={"resourceType": "Bundle", "type": "batch", "entry": [entry, entry]})
        assert batch.status_code == 200, batch.text
        assert [e["response"]["etag"] for e in batch.json()["entry"]] == ['W/"1"', 'W/"1"']
        feed = (json.dumps(entry) + "\n").encode()
        location = client.post("$bulk-submit", content=feed, headers=NDJSON).headers["content-location"]
        _poll(client, location)
        lines = [json.loads(line) for line in client.get(f"{location}/results").text.splitlines()]
        assert lines[0]["status"] == "200 OK" and lines[0]["etag"] == 'W/"1"', lines
        assert _versions(client, "Patient/noop-b") == 1


def _org(rid: str, *identifiers: tuple[str | None, str]) -> dict[str, Any]:
    listed = [{"value": v} if s is None else {"system": s, "value": v} for s, v in identifiers]
    return {"resourceType": "Organization", "id": rid, "identifier": listed}


@pytest.fixture(scope="module")
def directory(service: Service) -> None:
    with service.client() as client:
        for resource in (
            _org("s1", ("urn:finess", "111")),
            _org("s2", ("urn:finess", "222"), ("urn:siret", "999")),
            _org("s3", ("urn:siret", "222")),
            _org("s4", (None, "333")),
            _org("s5", ("urn:finess", "555")),
        ):
            assert client.put(f"Organization/{resource['id']}", json=resource).status_code in (200, 201)
        assert client.delete("Organization/s5").status_code == 200


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("identifier=urn:finess|111", ["s1"]),
        ("identifier=222", ["s2", "s3"]),
        ("identifier=urn:siret|222", ["s3"]),
        ("identifier=|333", ["s4"]),
        ("identifier=|222", []),
        ("identifier=urn:finess|555", []),
        ("identifier=urn:none|1", []),
        ("_id=s2", ["s2"]),
        ("_id=s5", []),
        ("_id=nobody", []),
    ],
)
def test_search_by_identifier_and_id(service: Service, directory: None, query: str, ids: list[str]) -> None:
    with service.client() as client:
        answer = client.get(f"Organization?{query}")
        assert answer.status_code == 200, answer.text
        bundle = answer.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["total"] == len(ids)
        assert sorted(e["resource"]["id"] for e in bundle.get("entry", [])) == ids
        assert all(
            e["search"]["mode"] == "match" and e["fullUrl"].endswith(f"Organization/{e['resource']['id']}")
            for e in bundle.get("entry", [])
        )


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("identifier=urn:finess|", ["s1", "s2"]),  # s5 carried one too, but is deleted
        ("identifier=urn:siret|", ["s2", "s3"]),
        ("identifier=urn:none|", []),
    ],
)
def test_search_by_system_only_pages_through_every_match(
    service: Service, directory: None, query: str, ids: list[str]
) -> None:
    with service.client() as client:
        url: str | None = f"Organization?{query}&_count=1"
        found, pages = [], 0
        while url:
            answer = client.get(url)
            assert answer.status_code == 200, answer.text
            bundle = answer.json()
            assert bundle["type"] == "searchset" and len(bundle.get("entry", [])) <= 1
            found += [e["resource"]["id"] for e in bundle.get("entry", [])]
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
            pages += 1
            assert pages <= 10
    assert sorted(found) == ids


def test_a_conditional_target_by_system_only_is_refused(service: Service, directory: None) -> None:
    with service.client() as client:
        answer = client.patch("Organization?identifier=urn:finess|", json=[], headers=JSON_PATCH)
        assert answer.status_code == 400 and "system only" in answer.json()["issue"][0]["diagnostics"]


def test_search_is_listed_in_the_capability_statement(service: Service) -> None:
    with service.client() as client:
        statement = client.get("metadata").json()
    organization = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Organization")
    assert {"code": "search-type"} in organization["interaction"]
    assert {p["name"] for p in organization["searchParam"]} == {"identifier", "_id"}


def test_conditional_patch_by_id_and_by_identifier(service: Service, directory: None) -> None:
    alias = [{"op": "add", "path": "/alias", "value": ["by-id"]}]
    with service.client() as client:
        assert client.patch("Organization?_id=s4", json=alias, headers=JSON_PATCH).json()["alias"] == ["by-id"]
        assert client.patch("Organization?_id=s5", json=alias, headers=JSON_PATCH).status_code == 404
        assert client.patch("Organization?identifier=222", json=alias, headers=JSON_PATCH).status_code == 412
        answer = client.patch("Organization?identifier=urn:finess|111", json=alias, headers=JSON_PATCH)
        assert answer.status_code == 200 and answer.json()["id"] == "s1"


def test_a_synchronous_batch_waits_for_its_entries(service: Service) -> None:
    """Re-sent 25 times: the answer is the batch-response (200) every time, never an early 202."""
    patch = base64.b64encode(b'[{"op":"add","path":"/active","value":true}]').decode()
    with service.client() as client:
        for n in range(25):
            bundle = {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {
                        "request": {"method": "PUT", "url": f"Patient/sb{n}"},
                        "resource": {"resourceType": "Patient", "id": f"sb{n}"},
                    },
                    {
                        "request": {"method": "PATCH", "url": "Binary/sbx"},
                        "resource": {
                            "resourceType": "Binary",
                            "contentType": "application/json-patch+json",
                            "data": patch,
                        },
                    },
                ],
            }
            answer = client.post("", json=bundle)
            assert answer.status_code == 200, (n, answer.headers.get("x-progress"), answer.text[:300])
            assert [e["response"]["status"][:3] for e in answer.json()["entry"]] == ["201", "404"]


def test_a_transaction_with_nothing_to_write_is_answered_at_once(service: Service, directory: None) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "GET", "url": "Organization/s1"}},
            {"request": {"method": "GET", "url": "Organization/none"}},
        ],
    }
    with service.client() as client:
        started = time.monotonic()
        answer = client.post("", json=bundle)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 10  # answered from the reads, not after a reconciler pass
        entries = answer.json()["entry"]
        assert answer.json()["type"] == "transaction-response"
        assert entries[0]["resource"]["id"] == "s1" and entries[1]["response"]["status"].startswith("404")
        empty = client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": []})
        assert empty.status_code == 200 and empty.json().get("entry", []) == []


def test_locations_use_the_served_host_never_a_forged_one(service: Service) -> None:
    with service.client() as client:
        created = client.post("Patient", json={"resourceType": "Patient"})
        assert created.headers["location"].startswith(service.fhir)
        forged = client.post("Patient", json={"resourceType": "Patient"}, headers={"host": "evil.example"})
        assert forged.status_code == 400 and "evil.example" not in forged.headers.get("location", "")
