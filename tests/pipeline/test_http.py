"""The FHIR HTTP surface: error table, CRUD and history, meta carry-forward, Prefer, metadata, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.processes import wait_progress
from tests.support.service import Service

ERRORS = yaml.safe_load((Path(__file__).parent / "data" / "http_errors.yaml").read_text())


@pytest.fixture(scope="module")
def resources(service: Service) -> None:
    with service.client() as client:
        assert client.put("Patient/e1", json={"resourceType": "Patient", "id": "e1"}).status_code in (200, 201)
        assert client.put("Patient/e2", json={"resourceType": "Patient", "id": "e2"}).status_code in (200, 201)
        assert client.delete("Patient/e2").status_code == 200


@pytest.mark.parametrize("case", ERRORS, ids=[c["name"] for c in ERRORS])
def test_bad_request_answers_with_an_operation_outcome(service: Service, resources: None, case: dict[str, Any]) -> None:
    request, expect = case["request"], case["expect"]
    body = b"[" + b" " * request["body_size"] + b"]" if "body_size" in request else request.get("body", "").encode()
    with service.client() as client:
        before = client.get("Patient/e1").json()["meta"]["versionId"]
        answer = client.request(request["method"], request["path"], content=body, headers=request.get("headers", {}))
        assert answer.status_code == expect["status"], answer.text
        issue = answer.json()["issue"][0]
        assert answer.json()["resourceType"] == "OperationOutcome" and issue["diagnostics"]
        assert issue["code"] == expect["code"], answer.text
        if "expression" in expect:
            assert issue["expression"] == expect["expression"], answer.text
        assert client.get("Patient/e1").json()["meta"]["versionId"] == before, "nothing written"


def test_crud_history_and_meta_carry_forward(service: Service) -> None:
    tagged = {
        "resourceType": "Patient",
        "id": "h1",
        "meta": {"tag": [{"system": "urn:t", "code": "keep"}], "profile": ["http://example.org/p1"]},
    }
    with service.client() as client:
        created = client.put("Patient/h1", json=tagged)
        assert created.status_code == 201 and created.headers["etag"] == 'W/"1"'
        updated = client.put(
            "Patient/h1", json={"resourceType": "Patient", "id": "h1", "meta": {"profile": ["http://example.org/p2"]}}
        )
        assert updated.status_code == 200
        meta = updated.json()["meta"]
        assert meta["tag"] == [{"system": "urn:t", "code": "keep"}] and meta["profile"] == ["http://example.org/p2"]
        snapshot = client.put(
            "Patient/h1",
            json={"resourceType": "Patient", "id": "h1", "active": True},
            headers={"x-meta-snapshot-mode": "TAG"},
        )
        assert "tag" not in snapshot.json().get("meta", {})
        minimal = client.patch(
            "Patient/h1",
            content=b'[{"op":"add","path":"/gender","value":"male"}]',
            headers={"content-type": "application/json-patch+json", "prefer": "return=minimal"},
        )
        assert minimal.status_code == 200 and minimal.content == b"" and minimal.headers["etag"] == 'W/"4"'
        outcome = client.patch(
            "Patient/h1",
            content=b'[{"op":"replace","path":"/gender","value":"female"}]',
            headers={"content-type": "application/json-patch+json", "prefer": "return=OperationOutcome"},
        )
        assert outcome.json()["resourceType"] == "OperationOutcome" and outcome.headers["etag"] == 'W/"5"'
        _delete_then_history(client)


def _delete_then_history(client: httpx.Client) -> None:
    assert client.get("Patient/h1/_history/1").json()["meta"]["versionId"] == "1"
    assert client.delete("Patient/h1").status_code == 200
    assert client.get("Patient/h1").status_code == 410
    assert client.get("Patient/h1/_history/6").status_code == 410
    history = client.get("Patient/h1/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PATCH", "PATCH", "PUT", "PUT", "PUT"]
    posted = client.post("Patient", json={"resourceType": "Patient", "active": True})
    assert posted.status_code == 201 and posted.headers["location"].endswith("/_history/1")


@pytest.mark.parametrize(
    "header", [("X-Retry-On-Version-Conflict", "retry"), ("HAPI-Retry-On-Version-Conflict", "Retry; max-retries=10")]
)
def test_the_version_conflict_retry_headers_are_accepted(service: Service, header: tuple[str, str]) -> None:
    """Smile CDR's and HAPI's clients send them; the write is applied as it would be without them."""
    name, value = header
    with service.client() as client:
        assert client.put("Patient/r1", json={"resourceType": "Patient", "id": "r1"}).status_code in (200, 201)
        patched = client.patch(
            "Patient/r1",
            content=b'[{"op":"add","path":"/active","value":true}]',
            headers={"content-type": "application/json-patch+json", name: value},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["active"] is True


def test_metadata_lists_the_patch_formats(service: Service) -> None:
    with service.client() as client:
        statement = client.get("metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert {"application/json-patch+json", "application/xml-patch+xml", "application/fhir+json"} <= set(
        statement["patchFormat"]
    )
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"patch", "read", "vread", "update", "delete", "history-instance", "create", "search-type"} == {
        i["code"] for i in patient["interaction"]
    }


def test_metrics_are_prometheus_text(service: Service) -> None:
    """The counters move by what happened: 3 jobs accepted, 2 applied, 1 failed, their latencies observed."""
    with service.ops() as ops, service.client() as client:
        before = _samples(ops.get("/metrics").text)
        assert client.put("Patient/m1", json={"resourceType": "Patient", "id": "m1"}).status_code in (200, 201)
        patch = {"content-type": "application/json-patch+json"}
        assert (
            client.patch(
                "Patient/m1", json=[{"op": "add", "path": "/active", "value": True}], headers=patch
            ).status_code
            == 200
        )
        assert (
            client.patch(
                "Patient/m1", json=[{"op": "add", "path": "/gender", "value": "robot"}], headers=patch
            ).status_code
            == 422
        )
        wait_progress(
            lambda: int(
                _samples(ops.get("/metrics").text)["fhir_patch_jobs_failed_total"]
                - before["fhir_patch_jobs_failed_total"]
            ),
            1,
            "the failure counted",
        )
        after = _samples(ops.get("/metrics").text)
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    assert delta["fhir_patch_jobs_accepted_total"] == 3
    assert delta["fhir_patch_jobs_applied_total"] == 2
    assert delta["fhir_patch_jobs_failed_total"] == 1
    assert delta["fhir_patch_accept_to_finish_seconds_count"] == 3
    assert after["fhir_patch_queue_depth"] >= 0


def _samples(text: str) -> dict[str, float]:
    """name -> value of the unlabelled samples of a Prometheus text page."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_flower_shows_the_workers(service: Service, tmp_path: Path) -> None:
    import sys

    from tests.support.processes import free_port, started, wait_for

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery.process",
        "flower",
        "--address=127.0.0.1",
        f"--port={port}",
    ]
    # The JSON API needs this switch (or auth); the test reads it on loopback only.
    with started(argv, {**service.env, "FLOWER_UNAUTHENTICATED_API": "true"}, tmp_path / "flower.log"):
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthcheck", trust_env=False).status_code == 200, 30, "Flower up")
        # Flower learns workers from their events and heartbeats; both workers of the service must appear.
        wait_for(
            lambda: (
                len(httpx.get(f"{url}/api/workers", params={"refresh": "1"}, trust_env=False, timeout=10).json()) >= 2
            ),
            30,
            "Flower lists the workers",
        )


@pytest.mark.parametrize("shape", ["PUT", "POST", "PATCH", "Bundle", "XML PUT"])
def test_deep_nesting_is_refused_while_parsing(service: Service, resources: None, shape: str) -> None:
    """Extensions nested 150 deep (beyond the documented limit) are a 400 at intake for every way in, never a 500."""
    method, path, body, content_type = _deep_requests()[shape]
    with service.client() as client:
        answer = client.request(method, path, content=body.encode(), headers={"content-type": content_type})
        assert answer.status_code == 400, answer.text
        issue = answer.json()["issue"][0]
        assert issue["code"] == "too-costly" and "nested deeper" in issue["diagnostics"]


def _deep_requests() -> dict[str, tuple[str, str, str, str]]:
    """Each way in, with extensions nested 150 deep: (method, path, body, content type)."""
    nested: dict[str, Any] = {"url": "http://x", "valueString": "v"}
    for _ in range(150):
        nested = {"url": "http://x", "extension": [nested]}
    patient = {"resourceType": "Patient", "id": "e1", "extension": [nested]}
    xml = (
        '<Patient xmlns="http://hl7.org/fhir"><id value="e1"/>'
        + '<extension url="http://x">' * 150
        + '<valueString value="v"/>'
        + "</extension>" * 150
        + "</Patient>"
    )
    requests = {
        "PUT": ("PUT", "Patient/e1", json.dumps(patient), "application/fhir+json"),
        "POST": ("POST", "Patient", json.dumps(patient), "application/fhir+json"),
        "PATCH": (
            "PATCH",
            "Patient/e1",
            json.dumps([{"op": "add", "path": "/extension", "value": [nested]}]),
            "application/json-patch+json",
        ),
        "Bundle": (
            "POST",
            "",
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "batch",
                    "entry": [{"resource": patient, "request": {"method": "PUT", "url": "Patient/e1"}}],
                }
            ),
            "application/fhir+json",
        ),
        "XML PUT": ("PUT", "Patient/e1", xml, "application/fhir+xml"),
    }
    return requests
