"""A job whose outcome MongoDB cannot store as written (a lone surrogate quoted in its diagnostics, from a JSON
Patch path) fails alone with its own outcome, and the resource's later jobs go on (it used to block the key
forever: retried every 30 s, later jobs never reporting)."""

from __future__ import annotations

from tests.support.service import Service, wait_jobs_final

JSON_PATCH = {"content-type": "application/json-patch+json"}
POISON = b'[{"op":"replace","path":"/\\ud800","value":1}]'


def test_a_lone_surrogate_fails_its_job_alone_and_the_key_moves_on(service: Service) -> None:
    with service.client() as client:
        assert client.put("Patient/poison", json={"resourceType": "Patient", "id": "poison"}).status_code == 201
        bad = client.patch("Patient/poison", content=POISON, headers=JSON_PATCH)
        assert bad.status_code == 422, bad.text
        late = client.patch("Patient/poison", content=POISON, headers={**JSON_PATCH, "prefer": "respond-async"})
        good = client.patch(
            "Patient/poison", content=b'[{"op":"add","path":"/gender","value":"male"}]', headers=JSON_PATCH
        )
        assert good.status_code == 200 and good.json()["gender"] == "male", "the key moved on"
        polled = wait_jobs_final(client, [late.headers["content-location"]])[late.headers["content-location"]]
        outcome = polled.json()["entry"][0]["response"]
        assert outcome["status"].startswith("422")
        assert "\ufffd" in outcome["outcome"]["issue"][0]["diagnostics"], (
            "stored with the unstorable character replaced"
        )
