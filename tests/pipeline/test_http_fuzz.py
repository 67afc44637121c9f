"""Fuzzing the HTTP routes of a running service with random requests: no client input gets a 5xx, every error is
an OperationOutcome with diagnostics, and the service stays healthy. Prints how many requests were tried."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.service import Service

TRIED = {"requests": 0, "5xx": 0}
types = st.sampled_from(
    [
        "Patient",
        "Observation",
        "Resource",
        "DomainResource",
        "Bundle",
        "Binary",
        "patient",
        "Wizard",
        "",
        "Parameters",
        "Provenance",
        "_async",
        "$bulk-submit",
        "metadata",
    ]
)
ids = st.one_of(
    st.sampled_from(
        [
            "fz1",
            "fz1\n",
            "a" * 65,
            "%00",
            "..",
            "x_y",
            "²",
            "fz1/_history/1",
            "fz1/_history/٢",
            "fz1/_history/99999999999999999999",
            "fz1/_history",
        ]
    ),
    st.text(max_size=10),
)
queries = st.sampled_from(
    [
        "",
        "?identifier=x",
        "?_id=fz1",
        "?_count=²",
        "?_count=-1",
        "?name=x",
        "?identifier=",
        "?identifier=a|b|c",
        "?target=Patient/fz1",
        "?_strict=true",
        "?identifier=%ZZ",
    ]
)
numbers = st.sampled_from(["1e999999999", "-0", "1" * 80, "1.50", "2147483648", "1e-400"])
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.sampled_from(["\ud800", "<div/>", "Patient"])
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
json_bodies = st.one_of(
    values.map(lambda v: json.dumps(v)),
    st.builds(lambda n: '{"resourceType":"Patient","id":"fz1","multipleBirthInteger":' + n + "}", numbers),
    st.just('{"resourceType":"Patient","id":"fz1","id":"fz2"}'),
    st.just('[{"op":"replace","path":"","value":"x"}]'),
    st.just('[{"op":"add","path":"/extension","value":' + '[{"url":"u","extension":' * 150 + "[]" + "}]" * 150 + "}]"),
    st.builds(lambda ops: json.dumps({"resourceType": "Parameters", "parameter": ops}), st.lists(values, max_size=3)),
    st.builds(
        lambda entries: json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}),
        st.lists(values, max_size=3),
    ),
    st.builds(
        lambda entries: json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        st.lists(
            st.fixed_dictionaries(
                {
                    "request": st.fixed_dictionaries(
                        {"method": st.sampled_from(["GET", "PUT", "X"]), "url": st.text(max_size=12)},
                        optional={"ifMatch": values},
                    )
                },
                optional={"resource": values},
            ),
            max_size=3,
        ),
    ),
)
bodies = st.one_of(
    json_bodies.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"<Patch><remove sel='/'/></Patch>",
            b"<Patient xmlns='http://hl7.org/fhir'><id value='fz1'/></Patient>",
            b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",
            b"{}\n" * 5,
        ]
    ),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            [
                "application/json-patch+json",
                "application/fhir+json",
                "application/xml-patch+xml",
                "application/fhir+xml",
                "application/fhir+ndjson",
                "text/plain",
                "application/json; charset=latin1",
                "application/fhir+json; fhirVersion=4.0",
            ]
        ),
        "if-match": st.sampled_from(['W/"1"', 'W/"99999999999999999999"', "banana", 'W/"²"', '"1"']),
        "prefer": st.sampled_from(["respond-async", "return=minimal", "return=OperationOutcome", "handling=strict"]),
        "x-request-id": st.sampled_from(["ok-1", "bad id", "x" * 300]),
        "idempotency-key": st.text(alphabet="abc", min_size=1, max_size=3),
        "x-callback-url": st.sampled_from(
            ["http://127.0.0.1:1/hook", "http://127.0.0.1\t/x", "ftp://x", "http://user@127.0.0.1/"]
        ),
    },
)
methods = st.sampled_from(["GET", "PUT", "POST", "PATCH", "DELETE"])


@pytest.fixture(scope="module")
def client(service: Service) -> Any:
    with service.client(timeout=60) as http:
        http.put("Patient/fz1", json={"resourceType": "Patient", "id": "fz1"})
        yield http


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(methods, types, ids, queries, headers, bodies)
def test_no_request_gets_a_server_error(
    client: httpx.Client, method: str, type_: str, id_: str, query: str, extra: dict[str, str], body: bytes
) -> None:
    path = f"{type_}/{id_}" if id_ and method != "POST" else type_
    TRIED["requests"] += 1
    try:
        answer = client.request(
            method,
            path + query,
            content=body if method in ("PUT", "POST", "PATCH") else None,
            headers={k: v.encode() for k, v in {**extra, "prefer": extra.get("prefer") or "respond-async"}.items()},
        )
    except httpx.InvalidURL:
        return  # not sendable as HTTP at all
    TRIED["5xx"] += answer.status_code >= 500
    assert answer.status_code < 500, (method, path + query, extra, body[:200], answer.text[:500])
    if answer.status_code >= 400:
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["diagnostics"], answer.text


def test_the_service_is_healthy_after_the_fuzzing(service: Service) -> None:
    print(json.dumps({"http_fuzz": TRIED}))
    assert TRIED["5xx"] == 0
    with service.anonymous() as anonymous:
        assert anonymous.get("/healthz").status_code == 200
    with service.client() as client:
        assert client.get("Patient/fz1").status_code in (200, 410)
