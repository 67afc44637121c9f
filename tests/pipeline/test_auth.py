"""Authentication and authorization end to end: real tokens (tests/support/tokens.py), real API and workers."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from api.app import create_app
from tests.support.service import Service, wait_jobs_final
from worker.settings import Settings

MATRIX = yaml.safe_load((Path(__file__).parent / "data" / "scope_matrix.yaml").read_text())
ASYNC = {"prefer": "respond-async"}
JSON_PATCH = {"content-type": "application/json-patch+json"}
SYSTEM = "urn:test:matrix"


def settled(client: httpx.Client, answer: httpx.Response) -> int:
    """The status of a write: its synchronous answer, or (after the documented 202 fallback) its job's."""
    if answer.status_code != 202 or "content-location" not in answer.headers:
        return answer.status_code
    final = wait_jobs_final(client, [answer.headers["content-location"]])[answer.headers["content-location"]]
    entry = final.json()["entry"][0]["response"]
    return int(entry["status"].split()[0])


def _resource(resource_type: str, resource_id: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": resource_type,
        "identifier": [{"system": SYSTEM, "value": resource_id or "new"}],
    }
    if resource_type == "DocumentReference":
        body.update(status="current", content=[{"attachment": {"url": "http://example.org/doc"}}])
    else:
        body["name"] = "start"
    if resource_id:
        body["id"] = resource_id
    return {**body, **extra}


def _patch(resource_type: str) -> bytes:
    if resource_type == "DocumentReference":  # the service's global policy lets a DocumentReference patch change this
        return json.dumps([{"op": "add", "path": "/securityLabel", "value": [{"coding": [{"code": "N"}]}]}]).encode()
    return json.dumps([{"op": "replace", "path": "/name", "value": "patched"}]).encode()


def _interaction(name: str, client: httpx.Client, resource_type: str, rid: str) -> httpx.Response:
    fresh = f"{rid}-new"
    body = json.dumps(_resource(resource_type, rid, language="en")).encode()
    calls = {
        "read": lambda: client.get(f"{resource_type}/{rid}"),
        "vread": lambda: client.get(f"{resource_type}/{rid}/_history/1"),
        "history": lambda: client.get(f"{resource_type}/{rid}/_history"),
        "$diff": lambda: client.get(f"{resource_type}/{rid}/$diff"),
        "create (POST)": lambda: client.post(resource_type, json=_resource(resource_type, None)),
        "create (PUT)": lambda: client.put(f"{resource_type}/{fresh}", json=_resource(resource_type, fresh)),
        "update (PUT)": lambda: client.put(
            f"{resource_type}/{rid}", content=body, headers={"content-type": "application/fhir+json"}
        ),
        "patch": lambda: client.patch(f"{resource_type}/{rid}", content=_patch(resource_type), headers=JSON_PATCH),
        "conditional patch": lambda: client.patch(
            f"{resource_type}?identifier={SYSTEM}|{rid}", content=_patch(resource_type), headers=JSON_PATCH
        ),
        "delete": lambda: client.delete(f"{resource_type}/{rid}"),
        "patch (dry run)": lambda: client.patch(
            f"{resource_type}/{rid}", params={"dryRun": "true"}, content=_patch(resource_type), headers=JSON_PATCH
        ),
    }
    return calls[name]()


def test_every_fhir_route_but_metadata_needs_a_token(service: Service) -> None:
    app = create_app(Settings.from_env({"FHIR_PATCH_AUTH_DISABLED": "true"}))
    paths = app.openapi()["paths"]
    routes = [
        (method.upper(), path) for path, methods in paths.items() for method in methods if path.startswith("/fhir")
    ]
    assert len(routes) >= 15
    with service.anonymous() as anonymous:
        for method, path in routes:
            url = re.sub(r"\{(\w+)\}", lambda m: {"resource_type": "Patient", "version_id": "1"}.get(m[1], "x1"), path)
            answer = anonymous.request(method, url)
            if path == "/fhir/metadata":
                assert answer.status_code == 200
                continue
            assert answer.status_code == 401, f"{method} {path}: {answer.status_code}"
            assert answer.headers["www-authenticate"].startswith('Bearer realm="'), f"{method} {path}"
            assert answer.json()["issue"][0]["code"] == "login"
        bad = anonymous.get("/fhir/Patient/x1", headers={"authorization": "Bearer not.a.jwt"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        basic = anonymous.get("/fhir/Patient/x1", headers={"authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401
        for path in ("/healthz", "/readyz"):
            assert anonymous.get(path).status_code in (200, 503), f"{path} stays open"
        assert anonymous.get("/metrics").status_code == 401


def test_metrics_need_their_scope(service: Service) -> None:
    with service.client(scope="system/*.cruds") as client:
        assert client.get(f"{service.base}/metrics").status_code == 403
    with service.client(scope="system/metrics.read") as client:
        answer = client.get(f"{service.base}/metrics")
        assert answer.status_code == 200 and "fhir_patch_jobs_accepted_total" in answer.text


def test_the_capability_statement_says_smart(service: Service) -> None:
    with service.anonymous() as anonymous:
        security = anonymous.get("/fhir/metadata").json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


def _cells() -> list[tuple[str, str, str]]:
    return [(t, s, i) for t in MATRIX["types"] for s in MATRIX["scopes"] for i in MATRIX["interactions"]]


def test_scope_matrix(service: Service) -> None:
    """Each cell: the status the scope decides, a 403 naming the scope, and nothing written when refused. The cells
    are independent (each its own resource and subject), so four run at a time."""
    run = uuid.uuid4().hex[:6]
    cells = list(enumerate(_cells()))

    def create(numbered: tuple[int, tuple[str, str, str]]) -> int:
        n, (resource_type, _, _) = numbered
        with service.client() as admin:
            return settled(
                admin, admin.put(f"{resource_type}/m{run}-{n}", json=_resource(resource_type, f"m{run}-{n}"))
            )

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(create, cells)) == {201}
        failures = [f for found in pool.map(lambda c: _cell(service, run, *c), cells) for f in found]
    assert not failures, "\n".join(failures)


def _cell(service: Service, run: str, n: int, cell: tuple[str, str, str]) -> list[str]:
    resource_type, scope_name, interaction = cell
    scope = MATRIX["scopes"][scope_name].format(T=resource_type)
    expected = MATRIX["interactions"][interaction]
    letters = "".join(c for c in "cruds" if _grants(scope, resource_type, c))
    rid = f"m{run}-{n}"
    with service.client(scope=scope, sub=f"cell-{n}") as client:
        answer = _interaction(interaction, client, resource_type, rid)
        status = settled(client, answer)
    named = f"{resource_type} × {scope_name} × {interaction}"
    if expected["needs"] in letters:
        return (
            []
            if status == expected["status"]
            else [f"{named}: {status}, expected {expected['status']}: {answer.text[:200]}"]
        )
    body = answer.json()
    failures = []
    if (
        status != 403
        or body["issue"][0]["code"] != "forbidden"
        or f"{resource_type}." not in body["issue"][0]["diagnostics"]
    ):
        failures.append(f"{named}: {status} {answer.text[:200]}, expected 403 naming the scope")
    return failures + _nothing_written(service, resource_type, rid, named)


def _grants(scope: str, resource_type: str, letter: str) -> bool:
    from worker.model.access import Grants

    return Grants.parse(scope).allows(resource_type, letter)


def _nothing_written(service: Service, resource_type: str, rid: str, cell: str) -> list[str]:
    with service.client() as admin:
        current = admin.get(f"{resource_type}/{rid}")
        fresh = admin.get(f"{resource_type}/{rid}-new")
    problems = []
    if current.status_code != 200 or current.json()["meta"]["versionId"] != "1":
        problems.append(f"{cell}: refused, yet {resource_type}/{rid} is {current.status_code} {current.text[:120]}")
    if fresh.status_code != 404:
        problems.append(f"{cell}: refused, yet {resource_type}/{rid}-new exists")
    return problems


def _bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _put_entry(resource_type: str, rid: str) -> dict[str, Any]:
    return {"resource": _resource(resource_type, rid), "request": {"method": "PUT", "url": f"{resource_type}/{rid}"}}


def test_a_transaction_with_one_entry_out_of_scope_is_refused_whole(service: Service) -> None:
    rid = f"t{uuid.uuid4().hex[:8]}"
    with service.client(scope="system/Organization.cruds") as client:
        answer = client.post(
            "", json=_bundle("transaction", [_put_entry("Organization", rid), _put_entry("Basic", rid)])
        )
    assert answer.status_code == 403, answer.text
    issue = answer.json()["issue"][0]
    assert (
        issue["code"] == "forbidden"
        and issue["expression"] == ["Bundle.entry[1]"]
        and "system/Basic." in issue["diagnostics"]
    )
    with service.client() as admin:
        assert admin.get(f"Organization/{rid}").status_code == 404, "nothing of the transaction was written"


def test_a_batch_entry_out_of_scope_fails_alone(service: Service) -> None:
    rid = f"b{uuid.uuid4().hex[:8]}"
    entries = [
        _put_entry("Organization", rid),
        _put_entry("Basic", rid),
        {"request": {"method": "GET", "url": f"Basic/{rid}"}},
        {"request": {"method": "GET", "url": f"Organization/{rid}"}},
    ]
    with service.client(scope="system/Organization.cruds") as client:
        answer = client.post("", json=_bundle("batch", entries))
        if answer.status_code == 202:
            answer = wait_jobs_final(client, [answer.headers["content-location"]])[answer.headers["content-location"]]
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"].split()[0] for e in answer.json()["entry"]]
    assert statuses == ["201", "403", "403", "200"], statuses
    assert answer.json()["entry"][1]["response"]["outcome"]["issue"][0]["expression"][0] == "Bundle.entry[1]"
    with service.client() as admin:
        assert admin.get(f"Basic/{rid}").status_code == 404


def test_a_feed_line_out_of_scope_fails_alone(service: Service) -> None:
    rid = f"f{uuid.uuid4().hex[:8]}"
    lines = [_put_entry("Organization", rid), _put_entry("Basic", rid), _put_entry("Organization", f"{rid}-2")]
    feed = "\n".join(json.dumps(line) for line in lines).encode()
    with service.client(scope="system/Organization.cu") as client:
        answer = client.post("$bulk-submit", content=feed, headers={"content-type": "application/fhir+ndjson"})
        assert answer.status_code == 202, answer.text
        location = answer.headers["content-location"]
        wait_jobs_final(client, [location])
        results = [json.loads(line) for line in client.get(f"{location}/results").text.splitlines()]
    assert [r["status"].split()[0] for r in results] == ["201", "403", "201"], results
    assert results[1]["outcome"]["issue"][0]["expression"][0] == "line 2"


def test_jobs_belong_to_their_subject(service: Service) -> None:
    rid = f"o{uuid.uuid4().hex[:8]}"
    with (
        service.client(sub="alice") as alice,
        service.client(sub="mallory", scope="system/*.cruds") as mallory,
        service.client(sub="root") as admin,
    ):
        answer = alice.put(f"Organization/{rid}", json=_resource("Organization", rid), headers=ASYNC)
        location = answer.headers["content-location"]
        job_id = location.rsplit("/", 1)[1]
        assert mallory.get(f"_async/{job_id}").status_code == 404
        assert mallory.delete(f"_async/{job_id}").status_code == 404
        wait_jobs_final(alice, [location])
        assert alice.get(f"_async/{job_id}").status_code == 200
        assert admin.get(f"_async/{job_id}").status_code == 200, "system/jobs.admin sees every job"
        feed = json.dumps(_put_entry("Organization", f"{rid}-f")).encode()
        group = alice.post("$bulk-submit", content=feed, headers={"content-type": "application/fhir+ndjson"})
        group_id = group.headers["content-location"].rsplit("/", 1)[1]
        assert mallory.get(f"_async/{group_id}").status_code == 404
        assert mallory.get(f"_async/{group_id}/results").status_code == 404
        assert mallory.delete(f"_async/{group_id}").status_code == 404
        # The same Idempotency-Key from two subjects names two requests, not one.
        key = {"idempotency-key": f"k-{rid}", **ASYNC}
        first = alice.put(f"Organization/{rid}-k", json=_resource("Organization", f"{rid}-k"), headers=key)
        second = mallory.put(
            f"Organization/{rid}-k", json=_resource("Organization", f"{rid}-k", name="other"), headers=key
        )
        assert (first.status_code, second.status_code) == (202, 202)
        assert first.headers["content-location"] != second.headers["content-location"]


def test_a_client_policy_lets_a_client_change_only_its_elements(service: Service) -> None:
    rid = f"p{uuid.uuid4().hex[:8]}"
    with service.client() as admin:
        assert settled(admin, admin.put(f"DocumentReference/{rid}", json=_resource("DocumentReference", rid))) == 201
    label = json.dumps([{"op": "add", "path": "/securityLabel", "value": [{"coding": [{"code": "R"}]}]}]).encode()
    content = json.dumps([{"op": "replace", "path": "/content/0/attachment/url", "value": "http://x/y"}]).encode()
    with service.client(scope="system/DocumentReference.u", sub="lab", client_id="labeller") as labeller:
        refused = labeller.patch(f"DocumentReference/{rid}", content=content, headers=JSON_PATCH)
        assert settled(labeller, refused) == 403
        assert settled(labeller, labeller.patch(f"DocumentReference/{rid}", content=label, headers=JSON_PATCH)) == 200
    with service.client() as admin:
        document = admin.get(f"DocumentReference/{rid}").json()
    assert (
        document["meta"]["versionId"] == "2" and document["content"][0]["attachment"]["url"] == "http://example.org/doc"
    )


def test_every_version_has_its_provenance(service: Service) -> None:
    rid = f"v{uuid.uuid4().hex[:8]}"
    with service.client(sub="alice", client_id="registry-a") as client:
        assert (
            settled(
                client,
                client.put(
                    f"Organization/{rid}", json=_resource("Organization", rid), headers={"x-request-id": "req-create"}
                ),
            )
            == 201
        )
        for n in range(4):
            patch = json.dumps([{"op": "replace", "path": "/name", "value": f"n{n}"}]).encode()
            assert settled(client, client.patch(f"Organization/{rid}", content=patch, headers=JSON_PATCH)) == 200
        assert settled(client, client.delete(f"Organization/{rid}")) == 200
        one = client.get("Provenance", params={"target": f"Organization/{rid}/_history/1"}).json()
        assert one["total"] == 1
        provenance = one["entry"][0]["resource"]
        assert provenance["target"] == [{"reference": f"Organization/{rid}/_history/1"}]
        assert provenance["activity"]["coding"][0]["code"] == "CREATE"
        assert {a["who"]["identifier"]["value"] for a in provenance["agent"]} == {"alice", "registry-a"}
        assert "req-create" in {e["what"]["identifier"]["value"] for e in provenance["entity"]}
        seen, url = [], f"{service.fhir}/Provenance?target=Organization/{rid}&_count=2"
        while url:
            page = client.get(url).json()
            seen += [e["resource"]["target"][0]["reference"] for e in page["entry"]]
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), "")
        assert seen == [f"Organization/{rid}/_history/{n}" for n in range(6, 0, -1)]
        codes = [
            client.get("Provenance", params={"target": f"Organization/{rid}/_history/{n}"}).json()["entry"][0][
                "resource"
            ]["activity"]["coding"][0]["code"]
            for n in (2, 6)
        ]
        assert codes == ["PATCH", "DELETE"]
    with service.client(scope="system/Organization.rs") as reader:
        assert reader.get("Provenance", params={"target": f"Organization/{rid}"}).status_code == 403


def test_refusals_are_logged_without_tokens(service: Service) -> None:
    assert service.issuer is not None
    token = service.issuer.token(scope="system/Patient.r", sub="logged-subject")
    with service.client(token=token) as client:
        assert client.delete("Patient/whatever").status_code == 403
    log = (service.log_dir / "api.log").read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"access.refused"' in line]
    assert any(
        e.get("subject") == "logged-subject" and e.get("route") == "DELETE /fhir/Patient/whatever" for e in events
    ), events[-3:]
    assert token not in log and token.split(".")[2] not in log
