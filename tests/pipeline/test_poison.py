"""A lone surrogate in a JSON Patch path (which once made an outcome MongoDB could not store, and blocked the key
forever) is refused at intake now, synchronous or not: nothing is queued, and the resource's later jobs go on."""

from __future__ import annotations

from tests.support.service import Service

JSON_PATCH = {"content-type": "application/json-patch+json"}
POISON = b'[{"op":"replace","path":"/\\ud800","value":1}]'


def test_a_lone_surrogate_fails_its_job_alone_and_the_key_moves_on(service: Service) -> None:
    with service.client() as client:
        assert client.put("Patient/poison", json={"resourceType": "Patient", "id": "poison"}).status_code == 201
        for prefer in ({}, {"prefer": "respond-async"}):
            bad = client.patch("Patient/poison", content=POISON, headers={**JSON_PATCH, **prefer})
            assert bad.status_code == 400, bad.text
            assert "lone surrogate" in bad.json()["issue"][0]["diagnostics"]
        good = client.patch(
            "Patient/poison", content=b'[{"op":"add","path":"/gender","value":"male"}]', headers=JSON_PATCH
        )
        assert good.status_code == 200 and good.json()["gender"] == "male", "the key moved on"
        assert good.headers["etag"] == 'W/"2"', "nothing of the refused patches was queued"
