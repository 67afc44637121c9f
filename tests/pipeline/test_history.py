"""History paging: every version reachable through `next`, `_count` honoured and bounded."""

from __future__ import annotations

import json

from tests.support.service import Service

VERSIONS = 150


def test_every_version_is_reachable_through_next(service: Service) -> None:
    with service.client() as client:
        assert client.put("Patient/h150", json={"resourceType": "Patient", "id": "h150"}).status_code in (200, 201)
        for n in range(VERSIONS - 1):
            patch = json.dumps([{"op": "add", "path": "/birthDate", "value": f"19{n % 100:02d}-01-01"}]).encode()
            assert (
                client.patch(
                    "Patient/h150", content=patch, headers={"content-type": "application/json-patch+json"}
                ).status_code
                == 200
            )
        first = client.get("Patient/h150/_history").json()
        assert first["total"] == VERSIONS and len(first["entry"]) == 100, "the default page is 100"
        seen, url, pages = [], f"{service.fhir}/Patient/h150/_history?_count=40", 0
        while url:
            page = client.get(url).json()
            seen += [int(e["response"]["etag"][3:-1]) for e in page["entry"]]
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), "")
            pages += 1
        assert seen == list(range(VERSIONS, 0, -1)) and pages == 4
        for bad in ("0", "1001", "²", "-1", "ten"):
            answer = client.get("Patient/h150/_history", params={"_count": bad})
            assert answer.status_code == 400 and answer.json()["issue"][0]["expression"] == ["_count"], bad
