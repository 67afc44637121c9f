"""`$diff` over HTTP, on a running service: every route, both formats, and the answer turns `from` into `to`."""

from __future__ import annotations

from typing import Any

import httpx
import jsonpatch

from tests.support.service import Service
from worker.patch import apply_fhirpath_patch
from worker.patch.diff import without_meta

JSON_PATCH = {"content-type": "application/json-patch+json"}
AS_JSON_PATCH = {"accept": "application/json-patch+json"}


def _versions(client: httpx.Client, key: str, changes: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each version of `key` after each JSON Patch in `changes` (the first version is PUT before)."""
    versions = [client.get(key).json()]
    for change in changes:
        answer = client.patch(key, json=change, headers=JSON_PATCH)
        assert answer.status_code == 200, answer.text
        versions.append(answer.json())
    return versions


def _turns_into(change: Any, old: dict[str, Any], new: dict[str, Any], include_meta: bool = False) -> None:
    """Applying an answered diff (either format) to `old` gives `new`."""
    old, new = (old, new) if include_meta else (without_meta(old), without_meta(new))
    if isinstance(change, list):
        assert jsonpatch.apply_patch(old, change) == new
    else:
        assert change["resourceType"] == "Parameters"
        assert apply_fhirpath_patch(old, change) == new


def test_instance_diff_is_the_patch_from_the_previous_version(service: Service) -> None:
    with service.client() as client:
        created = client.put("Patient/d1", json={"resourceType": "Patient", "id": "d1", "name": [{"family": "Old"}]})
        assert created.status_code == 201
        v1, v2, v3 = _versions(
            client,
            "Patient/d1",
            [
                [
                    {"op": "replace", "path": "/name/0/family", "value": "New"},
                    {"op": "add", "path": "/active", "value": True},
                ],
                [{"op": "add", "path": "/gender", "value": "female"}, {"op": "remove", "path": "/active"}],
            ],
        )
        last = client.get("Patient/d1/$diff")
        assert last.status_code == 200 and last.headers["content-type"].startswith("application/fhir+json")
        _turns_into(last.json(), v2, v3)
        assert all(
            part["valueString"] != "meta"
            for op in last.json()["parameter"]
            for part in op["part"]
            if part["name"] == "name"
        )
        since_first = client.get("Patient/d1/$diff", params={"fromVersion": "1"})
        _turns_into(since_first.json(), v1, v3)
        as_json = client.get("Patient/d1/$diff", params={"fromVersion": "1"}, headers=AS_JSON_PATCH)
        assert as_json.headers["content-type"].startswith("application/json-patch+json")
        _turns_into(as_json.json(), v1, v3)
        with_meta = client.get("Patient/d1/$diff", params={"includeMeta": "true"}, headers=AS_JSON_PATCH)
        assert any(op["path"].startswith("/meta") for op in with_meta.json())
        _turns_into(with_meta.json(), v2, v3, include_meta=True)
        assert client.get("Patient/d1/$diff", params={"fromVersion": "3"}).json()["parameter"] == []


def test_the_first_version_is_diffed_from_an_empty_resource(service: Service) -> None:
    with service.client() as client:
        resource = {"resourceType": "Organization", "id": "d2", "name": "Clinic", "alias": ["A", "B"]}
        assert client.put("Organization/d2", json=resource).status_code == 201
        answer = client.get("Organization/d2/$diff")
        assert answer.status_code == 200
        _turns_into(answer.json(), {"resourceType": "Organization", "id": "d2"}, client.get("Organization/d2").json())


def test_any_two_stored_versions_and_two_posted_resources(service: Service) -> None:
    with service.client() as client:
        for rid, family in (("d3", "One"), ("d4", "Two")):
            body = {"resourceType": "Patient", "id": rid, "name": [{"family": family}], "gender": "male"}
            assert client.put(f"Patient/{rid}", json=body).status_code == 201
        _versions(client, "Patient/d3", [[{"op": "add", "path": "/birthDate", "value": "1970-01-01"}]])
        first, other = client.get("Patient/d3/_history/1").json(), client.get("Patient/d4").json()
        across = client.get("$diff", params={"from": "Patient/d3/_history/1", "to": "Patient/d4"})
        assert across.status_code == 200, across.text
        _turns_into(across.json(), first, other)
        newest = client.get("$diff", params={"from": "Patient/d4", "to": "Patient/d3"}, headers=AS_JSON_PATCH)
        _turns_into(newest.json(), other, client.get("Patient/d3").json())
        old = {"resourceType": "Observation", "status": "preliminary", "code": {"text": "bp"}}
        new = {**old, "status": "final", "valueString": "120/80"}
        parameters = {
            "resourceType": "Parameters",
            "parameter": [{"name": "from", "resource": old}, {"name": "to", "resource": new}],
        }
        for headers in ({}, AS_JSON_PATCH):
            posted = client.post("$diff", json=parameters, headers=headers)
            assert posted.status_code == 200, posted.text
            _turns_into(posted.json(), old, new)
