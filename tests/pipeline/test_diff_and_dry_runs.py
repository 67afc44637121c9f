"""`$diff` and `?dryRun=true` on every write, on one running service of their own.

`$diff`: every route, both formats, and the answer turns `from` into `to`. A dry run: the real request's answer,
marked, and nothing stored.

Each test takes a snapshot of the whole MongoDB database (every document of every collection) and of every Redis
key of its namespace with its value before its dry runs and after them: they must be the same, byte for byte.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jsonpatch
import pymongo
import pytest
import redis
from bson import json_util

from tests.support.load import wait_group
from tests.support.service import Service, service_of_its_own
from worker.patch import apply_fhirpath_patch
from worker.patch.diff import without_meta

JSON_PATCH = {"content-type": "application/json-patch+json"}
NDJSON = {"content-type": "application/fhir+ndjson"}
DRY = {"dryRun": "true"}
AS_JSON_PATCH = {"accept": "application/json-patch+json"}
# Written by processes while they idle, whatever the requests: heartbeats, drainer registrations, locks.
_LIVENESS = (b":alive:", b":drainers", b":drainer-item", b":drainer-seq", b":reconciler", b":restoring")


@pytest.fixture(scope="module")
def service(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service of this module's own, with the default job retention: the shared one expires jobs after 6 s,
    which would change MongoDB under a snapshot."""
    with service_of_its_own(service_env, tmp_path_factory.mktemp("dry"), {}, workers=1) as running:
        yield running


def _snapshot(service: Service) -> tuple[dict[str, list[str]], dict[bytes, bytes | None]]:
    mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(service.env["FHIR_PATCH_MONGODB_URI"])
    store = redis.Redis.from_url(service.env["FHIR_PATCH_REDIS_URL"])
    try:
        db = mongo[service.env["FHIR_PATCH_DATABASE"]]
        documents = {
            name: sorted(json_util.dumps(doc) for doc in db[name].find({}))  # a test's small database, read whole
            for name in sorted(db.list_collection_names())
        }
        # This service's own keys (its namespace, which also names its Celery queue): the Redis is shared with
        # the other test processes' services.
        namespace = service.env["FHIR_PATCH_NAMESPACE"].encode()
        keys = sorted(
            k
            for k in store.scan_iter(count=1000)
            if namespace in k and not k.startswith(b"_kombu") and not any(part in k for part in _LIVENESS)
        )
        values = {key: store.dump(key) for key in keys}
        return documents, values
    finally:
        mongo.close()
        store.close()


def _settled(service: Service) -> tuple[dict[str, list[str]], dict[bytes, bytes | None]]:
    """A snapshot once the real requests before it are done with: a job is answered when its result is recorded,
    and its record leaves the in-flight `jobs` collection a moment later. Waits on progress, not on a clock."""
    previous = _snapshot(service)
    quiet_since = time.monotonic()
    while True:
        time.sleep(0.2)
        current = _snapshot(service)
        if current == previous and not current[0].get("jobs"):
            return current
        if current != previous:
            previous, quiet_since = current, time.monotonic()
        assert time.monotonic() - quiet_since < 60, "the stores kept changing with no request in flight"


@contextmanager
def nothing_stored(service: Service) -> Iterator[None]:
    before = _settled(service)
    yield
    after = _snapshot(service)
    assert after[0] == before[0], "MongoDB changed"
    assert sorted(after[1]) == sorted(before[1]), "Redis keys changed"
    assert after[1] == before[1], "a Redis value changed"


def _same_but_time(dry: dict[str, Any], real: dict[str, Any]) -> None:
    """The resource a dry run answers is the one the real request stores, but for when it was stored."""

    def strip(resource: dict[str, Any]) -> dict[str, Any]:
        return {**resource, "meta": {k: v for k, v in resource.get("meta", {}).items() if k != "lastUpdated"}}

    assert strip(dry) == strip(real)


def test_a_dry_patch_answers_as_the_real_one_and_stores_nothing(service: Service) -> None:
    patch = [{"op": "add", "path": "/active", "value": True}, {"op": "add", "path": "/gender", "value": "other"}]
    with service.client() as client:
        assert client.put("Patient/dr1", json={"resourceType": "Patient", "id": "dr1"}).status_code == 201
        with nothing_stored(service):
            dry = client.patch("Patient/dr1", params=DRY, json=patch, headers=JSON_PATCH)
            as_json_patch = client.patch(
                "Patient/dr1", params=DRY, json=patch, headers={**JSON_PATCH, "accept": "application/json-patch+json"}
            )
            as_fhirpath = client.patch(
                "Patient/dr1", params=DRY, json=patch, headers={**JSON_PATCH, "prefer": "return=diff"}
            )
            bad = client.patch(
                "Patient/dr1", params=DRY, json=[{"op": "add", "path": "/gender", "value": "x"}], headers=JSON_PATCH
            )
            stale = client.patch("Patient/dr1", params=DRY, json=patch, headers={**JSON_PATCH, "if-match": 'W/"7"'})
            wrong = client.patch("Patient/dr1", params={"dryRun": "perhaps"}, json=patch, headers=JSON_PATCH)
        assert dry.status_code == 200 and dry.headers["etag"] == 'W/"2"', dry.text
        assert dry.headers["x-dry-run"] == "true" and dry.headers["x-dry-run-based-on"] == "1"
        assert dry.headers["x-dry-run-queued-ahead"] == "0"
        old = {"resourceType": "Patient", "id": "dr1"}
        assert jsonpatch.apply_patch(old, as_json_patch.json()) == {k: v for k, v in dry.json().items() if k != "meta"}
        assert apply_fhirpath_patch(old, as_fhirpath.json()) == {k: v for k, v in dry.json().items() if k != "meta"}
        real_bad = client.patch(
            "Patient/dr1", json=[{"op": "add", "path": "/gender", "value": "x"}], headers=JSON_PATCH
        )
        real_stale = client.patch("Patient/dr1", json=patch, headers={**JSON_PATCH, "if-match": 'W/"7"'})
        for dry_answer, real_answer in ((bad, real_bad), (stale, real_stale)):
            assert (dry_answer.status_code, dry_answer.json()) == (real_answer.status_code, real_answer.json())
            assert dry_answer.headers["x-dry-run"] == "true"
        assert wrong.status_code == 400 and wrong.json()["issue"][0]["expression"] == ["dryRun"]
        real = client.patch("Patient/dr1", json=patch, headers=JSON_PATCH)
        assert real.status_code == 200 and real.headers["etag"] == dry.headers["etag"]
        _same_but_time(dry.json(), real.json())


def test_dry_create_update_delete_and_conditional_patch(service: Service) -> None:
    identified = {"resourceType": "Patient", "id": "dr2", "identifier": [{"system": "urn:dry", "value": "2"}]}
    with service.client() as client:
        assert client.put("Patient/dr2", json=identified).status_code == 201
        with nothing_stored(service):
            created = client.post("Patient", params=DRY, json={"resourceType": "Patient", "active": True})
            put_new = client.put("Patient/dr2-new", params=DRY, json={"resourceType": "Patient", "id": "dr2-new"})
            updated = client.put("Patient/dr2", params=DRY, json={**identified, "active": False})
            deleted = client.delete("Patient/dr2", params=DRY)
            conditional = client.patch(
                "Patient",
                params={"identifier": "urn:dry|2", **DRY},
                json=[{"op": "add", "path": "/active", "value": True}],
                headers=JSON_PATCH,
            )
            missing = client.delete("Patient/dr2-none", params=DRY)
        assert created.status_code == 201 and created.headers["x-dry-run-based-on"] == "none", created.text
        assert put_new.status_code == 201 and put_new.headers["etag"] == 'W/"1"'
        assert updated.status_code == 200 and updated.headers["etag"] == 'W/"2"' and updated.json()["active"] is False
        assert deleted.status_code == 200 and deleted.headers["x-dry-run-based-on"] == "1"
        assert conditional.status_code == 200 and conditional.json()["active"] is True
        assert missing.status_code == client.delete("Patient/dr2-none").status_code
        assert (
            client.get("Patient/dr2-new").status_code == 404
            and client.get("Patient/dr2").json()["meta"]["versionId"] == "1"
        )


def _bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _patch_entry(url: str, patch: list[dict[str, Any]]) -> dict[str, Any]:
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": _b64(patch)}
    return {"request": {"method": "PATCH", "url": url}, "resource": binary}


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


MISSING = _patch_entry("Patient/dr3-none", [{"op": "add", "path": "/active", "value": True}])


def test_a_dry_batch_builds_entries_on_each_other(service: Service) -> None:
    batch = _bundle(
        "batch",
        [
            _patch_entry("Patient/dr3", [{"op": "add", "path": "/active", "value": True}]),
            _patch_entry("Patient/dr3", [{"op": "add", "path": "/gender", "value": "male"}]),
            {"request": {"method": "GET", "url": "Patient/dr3"}},
            MISSING,
        ],
    )
    with service.client() as client:
        assert client.put("Patient/dr3", json={"resourceType": "Patient", "id": "dr3"}).status_code == 201
        with nothing_stored(service):
            dry_batch = client.post("", params=DRY, json=batch)
    assert dry_batch.status_code == 200 and dry_batch.headers["x-dry-run"] == "true", dry_batch.text
    first, second, read, none = dry_batch.json()["entry"]
    assert first["response"]["etag"] == 'W/"2"' and second["response"]["etag"] == 'W/"3"', "built on each other"
    assert second["resource"]["active"] is True and second["resource"]["gender"] == "male"
    assert read["resource"]["gender"] == "male", "the read comes after the writes"
    based_on = {"url": "urn:fhir-patch-worker:dry-run:based-on-version", "valueInteger": 2}
    assert based_on in second["response"]["extension"]
    assert none["response"]["status"].startswith("404")


def test_a_dry_transaction_answers_as_the_real_one(service: Service) -> None:
    transaction = _bundle(
        "transaction",
        [
            _patch_entry("Patient/dr5", [{"op": "add", "path": "/birthDate", "value": "1970-01-01"}]),
            {
                "request": {"method": "PUT", "url": "Patient/dr5-t"},
                "resource": {"resourceType": "Patient", "id": "dr5-t"},
            },
        ],
    )
    failing = _bundle("transaction", [transaction["entry"][0], MISSING])
    with service.client() as client:
        assert client.put("Patient/dr5", json={"resourceType": "Patient", "id": "dr5"}).status_code == 201
        with nothing_stored(service):
            dry_transaction = client.post("", params=DRY, json=transaction)
            dry_failing = client.post("", params=DRY, json=failing)
        assert dry_transaction.status_code == 200, dry_transaction.text
        patched, put = dry_transaction.json()["entry"]
        assert patched["response"]["etag"] == 'W/"2"' and put["response"]["status"].startswith("201")
        real_failing = client.post("", json=failing)
        assert (dry_failing.status_code, dry_failing.json()) == (real_failing.status_code, real_failing.json())
        real = client.post("", json=transaction)
    etags = [e["response"]["etag"] for e in real.json()["entry"]]
    assert etags == [e["response"]["etag"] for e in dry_transaction.json()["entry"]]


def test_a_dry_feed_gives_the_results_the_feed_would(service: Service) -> None:
    lines = [
        {"request": {"method": "PUT", "url": "Patient/dr4"}, "resource": {"resourceType": "Patient", "id": "dr4"}},
        _patch_entry("Patient/dr4", [{"op": "add", "path": "/active", "value": True}]),
        _patch_entry("Patient/dr4", [{"op": "replace", "path": "/active", "value": False}]),
        {"request": {"method": "PATCH", "url": "Patient/dr4"}},
        _patch_entry("Patient/dr4-none", [{"op": "add", "path": "/active", "value": True}]),
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode() + b"not json\n"
    with service.client(timeout=60) as client:
        with nothing_stored(service):
            dry = client.post("$bulk-submit", params=DRY, content=body, headers=NDJSON)
        assert dry.status_code == 200 and dry.headers["x-dry-run"] == "true", dry.text
        dry_lines = [json.loads(line) for line in dry.text.splitlines()]
        real = client.post("$bulk-submit", content=body, headers=NDJSON)
        assert real.status_code == 202, real.text
        real_lines = _results(client, real.headers["content-location"])
    assert [(d["line"], d["status"], d.get("etag")) for d in dry_lines] == [
        (r["line"], r["status"], r.get("etag")) for r in real_lines
    ]
    assert [d.get("basedOnVersion") for d in dry_lines] == [None, 1, 2, None, None, None]
    assert dry_lines[3]["outcome"] == real_lines[3]["outcome"] and dry_lines[5]["outcome"] == real_lines[5]["outcome"]


def _results(client: httpx.Client, location: str) -> list[dict[str, Any]]:
    assert wait_group(client, location).status_code == 200
    return [json.loads(line) for line in client.get(f"{location}/results").text.splitlines()]


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
