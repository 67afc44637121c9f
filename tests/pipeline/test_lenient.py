"""FHIR_PATCH_STORE_VALIDATION=lenient: imperfect directory exports are stored with warnings; structure, types and
formats are still refused; and a patch may never add a problem."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.service import Service, service_of_its_own

JSON_PATCH = {"content-type": "application/json-patch+json"}


@pytest.fixture(scope="module")
def lenient(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    settings = {"FHIR_PATCH_STORE_VALIDATION": "lenient"}
    with service_of_its_own(service_env, tmp_path_factory.mktemp("lenient"), settings) as running:
        yield running


# Observation without its required code; Task without intent: refused by R4, stored here with a warning.
IMPERFECT: list[dict[str, Any]] = [
    {"resourceType": "Observation", "id": "o1", "status": "final"},
    {"resourceType": "Task", "id": "t1", "status": "draft"},
]


@pytest.mark.parametrize("resource", IMPERFECT, ids=[r["resourceType"] for r in IMPERFECT])
def test_missing_required_elements_are_stored_with_a_warning(lenient: Service, resource: dict[str, Any]) -> None:
    key = f"{resource['resourceType']}/{resource['id']}"
    with lenient.client() as client:
        stored = client.put(key, json=resource, headers={"prefer": "return=OperationOutcome"})
        assert stored.status_code == 201, stored.text
        issues = stored.json()["issue"]
        assert any(i["severity"] == "warning" and i["code"] == "required" for i in issues), issues
        assert client.get(key).status_code == 200


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        ({"resourceType": "Observation", "id": "o2", "status": "final", "colour": "red"}, "Observation.colour"),
        ({"resourceType": "Observation", "id": "o2", "status": 7}, "Observation.status"),
        ({"resourceType": "Observation", "id": "o2", "status": "final", "issued": "yesterday"}, "Observation.issued"),
        (
            {"resourceType": "Observation", "id": "o2", "status": "final", "category": {"text": "x"}},
            "Observation.category",
        ),
    ],
)
def test_structure_types_and_formats_are_still_refused(lenient: Service, body: dict[str, Any], expression: str) -> None:
    with lenient.client() as client:
        answer = client.put("Observation/o2", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["issue"][0]["expression"][0] == expression


def test_a_patch_may_not_add_a_problem_but_may_leave_old_ones(lenient: Service) -> None:
    with lenient.client() as client:
        assert (
            client.put(
                "Observation/o3", json={"resourceType": "Observation", "id": "o3", "status": "final"}
            ).status_code
            == 201
        )
        fine = client.patch(
            "Observation/o3", json=[{"op": "replace", "path": "/status", "value": "amended"}], headers=JSON_PATCH
        )
        assert fine.status_code == 200, fine.text
        worse = client.patch(
            "Observation/o3", json=[{"op": "add", "path": "/status", "value": "robot"}], headers=JSON_PATCH
        )
        assert worse.status_code == 422 and worse.json()["issue"][0]["expression"] == ["Observation.status"]
        assert client.get("Observation/o3").json()["status"] == "amended"


def test_strict_is_the_default(service: Service) -> None:
    with service.client() as client:
        answer = client.put(
            "Observation/strict1", json={"resourceType": "Observation", "id": "strict1", "status": "final"}
        )
        assert answer.status_code == 422 and answer.json()["issue"][0]["code"] == "required"
