"""Each request in ../shared/reference/, adapted to local ids, answers as those documents say (real service)."""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.service import Service

CASES = yaml.safe_load((Path(__file__).parent / "data" / "reference_requests.yaml").read_text())


def _content(step: dict[str, Any]) -> bytes:
    body = step["body"]
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reference_request(service: Service, case: dict[str, Any]) -> None:
    given = case["given"]
    with service.client() as client:
        created = client.put(
            f"{given['resourceType']}/{given['id']}", json=given, headers={"content-type": "application/fhir+json"}
        )
        assert created.status_code in (200, 201), created.text
        for number, step in enumerate(case["steps"], 1):
            request, expect = step["request"], step["expect"]
            response = client.request(
                request["method"],
                request["path"],
                content=_content(request),
                headers={"content-type": request["content_type"], "accept": "application/fhir+json; fhirVersion=4.0"},
            )
            where = f"step {number}: {response.status_code} {response.text[:500]}"
            assert response.status_code == expect["status"], where
            body = response.json()
            if expect["status"] == 200:
                _check_success(response.headers, body, expect, where)
            else:
                assert body["resourceType"] == "OperationOutcome", where
                issue = body["issue"][0]
                assert issue["code"] == expect["code"] and issue["diagnostics"], where
                if "expression" in expect:
                    assert issue["expression"] == expect["expression"], where


def _check_success(headers: Any, body: dict[str, Any], expect: dict[str, Any], where: str) -> None:
    version = str(expect["version"])
    assert body["meta"]["versionId"] == version, where
    assert headers["etag"] == f'W/"{version}"', where
    assert headers["location"].endswith(f"/{body['resourceType']}/{body['id']}/_history/{version}"), where
    last_modified = parsedate_to_datetime(headers["last-modified"])
    assert body["meta"]["lastUpdated"].startswith(last_modified.strftime("%Y-%m-%dT%H:%M:%S")), where
    for element, value in expect.get("elements", {}).items():
        assert body.get(element) == value, f"{element}: {where}"
    for element in expect.get("absent", []):
        assert element not in body, f"{element} still present: {where}"
