"""Transaction Bundles: all entries or none, atomic with other jobs, and crash-safe commits."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import started, worker_argv
from tests.support.service import Service, wait_jobs_final


def add_identifier(url: str, value: str) -> dict[str, Any]:
    patch = json.dumps([{"op": "add", "path": "/identifier/-", "value": {"system": "urn:txn", "value": value}}])
    return {
        "request": {"method": "PATCH", "url": url},
        "resource": {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64.b64encode(patch.encode()).decode(),
        },
    }


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _patients(client: httpx.Client, prefix: str, count: int) -> None:
    for n in range(count):
        body = {
            "resourceType": "Patient",
            "id": f"{prefix}{n}",
            "identifier": [{"system": "urn:txn", "value": "start"}],
        }
        assert client.put(f"Patient/{prefix}{n}", json=body).status_code == 201


def test_one_failing_entry_among_50_writes_nothing(service: Service) -> None:
    with service.client() as client:
        _patients(client, "tx", 50)
        entries = [add_identifier(f"Patient/tx{n}", "all-or-nothing") for n in range(50)]
        entries[37] = {
            "request": {"method": "PATCH", "url": "Patient/tx37"},
            "resource": {
                "resourceType": "Binary",
                "contentType": "application/json-patch+json",
                "data": base64.b64encode(b'[{"op":"remove","path":"/gender"}]').decode(),
            },
        }
        answer = client.post("", json=transaction(*entries))
        assert answer.status_code == 422, answer.text
        issue = answer.json()["issue"][0]
        assert issue["expression"][0] == "Bundle.entry[37]" and issue["code"] == "not-found"
        for n in range(50):
            assert client.get(f"Patient/tx{n}").json()["meta"]["versionId"] == "1", f"Patient/tx{n} was written"
        entries[37] = add_identifier("Patient/tx37", "all-or-nothing")
        applied = client.post("", json=transaction(*entries))
        assert applied.status_code == 200 and applied.json()["type"] == "transaction-response"
        assert [e["response"]["etag"] for e in applied.json()["entry"]] == ['W/"2"'] * 50
        assert all(client.get(f"Patient/tx{n}").json()["meta"]["versionId"] == "2" for n in range(50))


def test_a_resource_twice_and_bad_entries_refuse_the_transaction(service: Service) -> None:
    with service.client() as client:
        _patients(client, "dup", 1)
        twice = client.post(
            "", json=transaction(add_identifier("Patient/dup0", "a"), add_identifier("Patient/dup0", "b"))
        )
        assert twice.status_code == 400 and twice.json()["issue"][0]["expression"][0] == "Bundle.entry[1]"
        unsupported = add_identifier("Patient/dup0", "c")
        unsupported["resource"]["contentType"] = "text/plain"
        refused = client.post("", json=transaction(add_identifier("Patient/dup0", "d"), unsupported))
        assert refused.status_code == 415 and refused.json()["issue"][0]["expression"][0] == "Bundle.entry[1]"
        assert client.get("Patient/dup0").json()["meta"]["versionId"] == "1"


def test_transactions_interleave_with_single_patches_as_units(service: Service) -> None:
    with service.client() as client:
        _patients(client, "mix", 4)
    markers = []

    def transactions() -> None:
        with service.client() as client:
            for n in range(15):
                marker = f"t{n}"
                markers.append(marker)
                answer = client.post(
                    "", json=transaction(*[add_identifier(f"Patient/mix{k}", marker) for k in range(4)])
                )
                assert answer.status_code == 200, answer.text

    def singles(k: int) -> None:
        with service.client() as client:
            for n in range(15):
                body = json.dumps(
                    [{"op": "add", "path": "/identifier/-", "value": {"system": "urn:single", "value": f"s{n}"}}]
                ).encode()
                assert (
                    client.patch(
                        f"Patient/mix{k}", content=body, headers={"content-type": "application/json-patch+json"}
                    ).status_code
                    == 200
                )

    threads = [threading.Thread(target=transactions)] + [threading.Thread(target=singles, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with service.client() as client:
        finals = [
            [i["value"] for i in client.get(f"Patient/mix{k}").json()["identifier"] if i["system"] == "urn:txn"]
            for k in range(4)
        ]
    assert all(values == ["start"] + markers for values in finals), "every transaction on every resource, in one order"


def test_workers_killed_during_transactions_never_leave_one_partly_visible(
    fresh_service: Service, tmp_path: Path
) -> None:
    """Rounds of overlapping transactions; in each, one worker is SIGKILLed at a random moment and replaced.
    Every transaction ends applied, on all its resources or none, and every history stays contiguous."""
    rng = random.Random(4)
    resources = 6
    with fresh_service.client() as client:
        _patients(client, "k", resources)
    expected: dict[str, list[int]] = {}
    with contextlib.ExitStack() as stack:
        for round_number in range(6):
            locations = _overlapping_transactions(fresh_service, rng, round_number, resources, expected)
            time.sleep(rng.uniform(0.0, 0.15))
            victim = round_number % len(fresh_service.workers)
            fresh_service.signal_worker(victim, signal.SIGKILL)
            fresh_service.workers[victim] = stack.enter_context(
                started(
                    worker_argv(f"replacement{round_number}"),
                    fresh_service.env,
                    tmp_path / f"replacement{round_number}.log",
                )
            )
            with fresh_service.client() as client:
                finals = wait_jobs_final(client, locations, timeout=120)
            failed = {where: (a.status_code, a.text[:400]) for where, a in finals.items() if a.status_code != 200}
            assert not failed, failed
    _check_all_or_none_and_contiguous(fresh_service, resources, expected)


def _overlapping_transactions(
    service: Service, rng: random.Random, round_number: int, resources: int, expected: dict[str, list[int]]
) -> list[str]:
    """Eight async transactions, each adding its marker to 3 random resources; their status URLs."""
    locations = []
    with service.client() as client:
        for n in range(8):
            touched = sorted(rng.sample(range(resources), 3))
            marker = f"r{round_number}-{n}"
            expected[marker] = touched
            bundle = transaction(*[add_identifier(f"Patient/k{k}", marker) for k in touched])
            answer = client.post("", json=bundle, headers={"prefer": "respond-async"})
            assert answer.status_code == 202
            locations.append(answer.headers["content-location"])
    return locations


def _check_all_or_none_and_contiguous(service: Service, resources: int, expected: dict[str, list[int]]) -> None:
    with service.client() as client:
        values = {k: [i["value"] for i in client.get(f"Patient/k{k}").json()["identifier"]] for k in range(resources)}
        for marker, touched in expected.items():
            holders = [k for k in range(resources) if marker in values[k]]
            assert holders == touched, f"{marker}: on {holders}, expected on {touched}"
            assert all(values[k].count(marker) == 1 for k in touched)
        for k in range(resources):
            history = client.get(f"Patient/k{k}/_history", params={"_count": 1000}).json()
            versions = [int(e["response"]["etag"][3:-1]) for e in history["entry"]]
            assert versions == list(range(len(values[k]), 0, -1)), f"Patient/k{k}: contiguous history"


def _binary(content_type: str, data: bytes) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(data).decode()}


def _referring_entries(org: str) -> list[dict[str, Any]]:
    """Patient/ur0..ur2 patched to refer to `org` (FHIRPath, JSON and XML Patch), Patient/ur3 PUT referring to it."""
    operation = [
        {"name": "type", "valueCode": "add"},
        {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "managingOrganization"},
        {"name": "value", "valueReference": {"reference": org}},
    ]
    fhirpath = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": operation}]}
    json_patch = json.dumps([{"op": "add", "path": "/managingOrganization", "value": {"reference": org}}]).encode()
    xml_patch = (
        f'<diff xmlns:f="http://hl7.org/fhir"><add sel="/f:Patient"><managingOrganization xmlns="http://hl7.org/fhir">'
        f'<reference value="{org}"/></managingOrganization></add></diff>'
    ).encode()
    put = {"resourceType": "Patient", "id": "ur3", "managingOrganization": {"reference": org}}
    return [
        {"request": {"method": "PATCH", "url": "Patient/ur0"}, "resource": fhirpath},
        {
            "request": {"method": "PATCH", "url": "Patient/ur1"},
            "resource": _binary("application/json-patch+json", json_patch),
        },
        {
            "request": {"method": "PATCH", "url": "Patient/ur2"},
            "resource": _binary("application/xml-patch+xml", xml_patch),
        },
        {"request": {"method": "PUT", "url": "Patient/ur3"}, "resource": put},
    ]


def test_urn_uuid_references_become_the_created_entry_in_every_patch_format(service: Service) -> None:
    org = "urn:uuid:2b4f7a34-58c1-4a38-9f0c-7d6d1f3c0a11"
    created_entry = {
        "fullUrl": org,
        "request": {"method": "POST", "url": "Organization"},
        "resource": {"resourceType": "Organization", "name": "New"},
    }
    with service.client() as client:
        _patients(client, "ur", 3)
        answer = client.post("", json=transaction(*_referring_entries(org), created_entry))
        assert answer.status_code == 200, answer.text
        created = answer.json()["entry"][4]["response"]["location"].split("/fhir/", 1)[1].split("/_history")[0]
        assert created.startswith("Organization/") and client.get(created).status_code == 200
        stored = [client.get(f"Patient/ur{n}").json()["managingOrganization"]["reference"] for n in range(4)]
        assert stored == [created] * 4, stored
        refused = client.post("", json=transaction(_referring_entries(org)[0]))
        assert refused.status_code == 400, refused.text
        issue = refused.json()["issue"][0]
        assert issue["expression"][0] == "Bundle.entry[0]" and org in issue["diagnostics"]
        assert client.get("Patient/ur0").json()["meta"]["versionId"] == "2", "nothing written"
