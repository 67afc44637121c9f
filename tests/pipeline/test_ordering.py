"""Per-resource order and no lost or duplicated versions, with real worker processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.load import identifier_patch, job_counts, wait_all_ended
from tests.support.service import Service, running_service
from worker.patch import apply_patch

JSON_PATCH = {"content-type": "application/json-patch+json"}
ASYNC = {**JSON_PATCH, "prefer": "respond-async"}


def test_200_concurrent_patches_make_versions_2_to_201_in_acceptance_order(service: Service) -> None:
    start = {"resourceType": "Patient", "id": "busy", "identifier": [{"system": "urn:test", "value": "start"}]}
    with service.client() as client:
        assert client.put("Patient/busy", json=start).status_code == 201

    def send(n: int) -> tuple[int, bytes, httpx.Response]:
        body = identifier_patch(f"c{n}")
        with service.client(timeout=60) as client:  # one connection per client: many clients, not one
            return n, body, client.patch("Patient/busy", content=body, headers=JSON_PATCH)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(send, range(200)))
    assert all(r.status_code == 200 for _, _, r in answers), [r.text for _, _, r in answers if r.status_code != 200][:3]
    versions = sorted(int(r.headers["etag"][3:-1]) for _, _, r in answers)
    assert versions == list(range(2, 202)), "every version exactly once, no gap"

    # Replay the accepted patches in the order their versions say, on the first version.
    replayed = start
    for _, body, _ in sorted(answers, key=lambda a: int(a[2].headers["etag"][3:-1])):
        replayed = apply_patch(replayed, body, "application/json-patch+json").resource
    with service.client() as client:
        final = client.get("Patient/busy").json()
        history = client.get("Patient/busy/_history", params={"_count": 300}).json()
    assert final["meta"]["versionId"] == "201"
    assert {k: v for k, v in final.items() if k != "meta"} == {k: v for k, v in replayed.items() if k != "meta"}
    assert [int(e["response"]["etag"][3:-1]) for e in history["entry"]] == list(range(201, 0, -1))


@pytest.fixture(scope="module")
def four_workers(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    token = uuid.uuid4().hex[:10]
    env = {**service_env, "FHIR_PATCH_DATABASE": f"o_{token}", "FHIR_PATCH_NAMESPACE": f"o-{token}"}
    with running_service(env, tmp_path_factory.mktemp("four"), workers=4) as running:
        yield running


def test_1200_patches_over_200_resources_with_4_workers_keep_per_resource_order(four_workers: Service) -> None:
    resources, per_resource = 200, 6
    with four_workers.client() as client:
        for r in range(resources):
            assert (
                client.put(
                    f"Patient/r{r}",
                    json={"resourceType": "Patient", "id": f"r{r}", "identifier": [{"value": "start"}]},
                    headers={"prefer": "respond-async"},
                ).status_code
                == 202
            )

    def submit_for(group: int) -> None:
        # Each thread owns some resources and sends their patches in order: that order is the acceptance order.
        with four_workers.client() as client:
            for n in range(per_resource):
                for r in range(group, resources, 16):
                    answer = client.patch(f"Patient/r{r}", content=identifier_patch(str(n)), headers=ASYNC)
                    assert answer.status_code == 202, answer.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(submit_for, range(16)))
    with four_workers.ops() as ops:
        wait_all_ended(ops, resources * (per_resource + 1))
        assert job_counts(ops)["failed"] == 0
    with four_workers.client() as client:
        for r in range(resources):
            patient = client.get(f"Patient/r{r}").json()
            assert [i["value"] for i in patient["identifier"]] == ["start"] + [str(n) for n in range(per_resource)], (
                f"Patient/r{r}"
            )
            assert patient["meta"]["versionId"] == str(per_resource + 1)
