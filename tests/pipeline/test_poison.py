"""A job whose outcome MongoDB cannot store as written (a lone surrogate in its diagnostics) fails alone with its
own outcome, and the resource's later jobs go on (it used to block the key forever)."""

from __future__ import annotations

from tests.support.service import Service

JSON_PATCH = {"content-type": "application/json-patch+json"}


def test_a_lone_surrogate_fails_its_job_alone_and_the_key_moves_on(service: Service) -> None:
    with service.client() as client:
        assert client.put("Patient/poison", json={"resourceType": "Patient", "id": "poison"}).status_code == 201
        bad = client.patch("Patient/poison", content=b'[{"op":"add","path":"/gender","value":"\\ud800"}]', headers=JSON_PATCH)
        assert bad.status_code == 422, bad.text
        assert bad.json()["issue"][0]["expression"] == ["Patient.gender"]
        good = client.patch("Patient/poison", content=b'[{"op":"add","path":"/gender","value":"male"}]', headers=JSON_PATCH)
        assert good.status_code == 200 and good.json()["gender"] == "male"
        late = client.patch("Patient/poison", content=b'[{"op":"add","path":"/gender","value":"\\ud800"}]',
                            headers={**JSON_PATCH, "prefer": "respond-async"})
        polled = client.get(late.headers["content-location"])
        while polled.status_code == 202:
            polled = client.get(late.headers["content-location"])
        outcome = polled.json()["entry"][0]["response"]
        assert outcome["status"].startswith("422") and "\ufffd" in outcome["outcome"]["issue"][0]["diagnostics"], \
            "stored with the unstorable character replaced"
