"""Norsk helsenett's PATCH of DocumentReference.securityLabel (../shared/reference/nhn-documentreference-patch.txt),
end to end on a real service with the NHN settings: DPoP-bound tokens and proofs made here, the nhn-* headers,
`Accept: ...; fhirVersion=4.0` and the deployment's scope name.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devkit.dpop import ProofKey
from tests.support.load import wait_group
from tests.support.processes import free_port
from tests.support.service import Service, service_of_its_own, wait_jobs_final
from tests.support.tokens import ADMIN_SCOPE

NHN_SCOPE = "nhn:phr/mhd/create-documents-with-reference"
COMMUNITY = "2.16.578.1.12.4.5.100.3.15"  # the seed's
OTHER = "2.16.578.1.12.4.5.100.3.16"
DOWN = "2.16.578.1.12.4.5.100.3.99"  # its registry is on a MongoDB deployment that is not there
RUN = uuid.uuid4().hex[:8]
NHN_SETTINGS = {
    "FHIR_PATCH_TENANTS": json.dumps(
        {
            COMMUNITY: f"nhn_a_{RUN}",
            f"urn:oid:{OTHER}": f"nhn_b_{RUN}",
            DOWN: {
                "database": f"nhn_c_{RUN}",
                "uri": f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300",
            },
        }
    ),
    "FHIR_PATCH_MONGODB_RETRY_SECONDS": "1",
    "FHIR_PATCH_ELEMENT_POLICIES": json.dumps({"DocumentReference": ["securityLabel"]}),
    "FHIR_PATCH_AUTH_DPOP": "required",
    "FHIR_PATCH_AUTH_DPOP_ALGORITHMS": "RS256,RS512,ES256",
    "FHIR_PATCH_REQUIRED_HEADERS": "nhn-source-system",
    "FHIR_PATCH_CORRELATION_HEADER": "nhn-event-id",
    "FHIR_PATCH_AUTH_SCOPE_ALIASES": json.dumps({NHN_SCOPE: "system/DocumentReference.u"}),
}
LABELS = [
    {"coding": [{"system": "urn:oid:2.16.840.1.113883.5.25", "code": "N", "display": "Normal"}]},
    {"coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.9603", "code": "NORS", "display": "Sperret"}]},
]
FHIR_JSON = {"content-type": "application/fhir+json"}
JSON_PATCH = {"content-type": "application/json-patch+json"}


@pytest.fixture(scope="module")
def nhn(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with (
        service_of_its_own(service_env, tmp_path_factory.mktemp("nhn"), NHN_SETTINGS) as running,
        httpx.Client(timeout=30, trust_env=False) as http,
    ):
        running.http = http  # type: ignore[attr-defined]  # one connection pool for every NhnClient of the module
        yield running


class NhnClient:
    """An EPJ system as NHN describes it: a DPoP-bound token, a fresh proof per request, the nhn-* headers."""

    def __init__(self, service: Service, key: ProofKey, scope: str = NHN_SCOPE) -> None:
        assert service.issuer is not None
        self.service, self.key = service, key
        self.token = service.issuer.token(scope, sub="epj-1", cnf={"jkt": key.thumbprint})
        self.http: httpx.Client = service.http  # type: ignore[attr-defined]

    def headers(self, method: str, url: str, **extra: str) -> dict[str, str]:
        return {
            "accept": "application/fhir+json; fhirVersion=4.0",
            "nhn-source-system": "EPJ System 1.0",
            "nhn-event-id": f"event-{uuid.uuid4()}",
            "authorization": f"DPoP {self.token}",
            "dpop": self.key.proof(method, url.split("?")[0], self.token, algorithm=self.algorithm),
            **extra,
        }

    @property
    def algorithm(self) -> str:
        return "ES256" if self.key.kind == "EC" else "RS512"

    def send(
        self, method: str, path: str, body: Any = None, community: str | None = COMMUNITY, **headers: str
    ) -> httpx.Response:
        """One request; `?homeCommunityId=` is added unless the path names one (or `community` is None)."""
        if community is not None and "homeCommunityId=" not in path:
            path += f"{'&' if '?' in path else '?'}homeCommunityId={community}"
        url = f"{self.service.fhir}/{path}"
        content = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        sent = {k: v for k, v in {**self.headers(method, url), **headers}.items() if v != "-"}
        return self.http.request(method, url, content=content, headers=sent)


def _document(nhn: Service, key: ProofKey, community: str = COMMUNITY, doc_id: str = "") -> str:
    """A DocumentReference to patch, put by an administrator (its own bound token)."""
    doc_id = doc_id or str(uuid.uuid4())
    body = {"resourceType": "DocumentReference", "id": doc_id, "status": "current", "content": [{"attachment": {}}]}
    body["content"][0]["attachment"] = {"contentType": "application/pdf", "url": "http://example.org/doc.pdf"}
    body["securityLabel"] = LABELS[:1]  # what example 2's `replace` replaces
    admin = NhnClient(nhn, key, ADMIN_SCOPE)
    created = admin.send("PUT", f"DocumentReference/{doc_id}", body, community, **FHIR_JSON)
    assert created.status_code == 201, created.text
    return doc_id


def _versions(nhn: Service, key: ProofKey, doc_id: str, community: str = COMMUNITY) -> int:
    history = NhnClient(nhn, key, ADMIN_SCOPE).send("GET", f"DocumentReference/{doc_id}/_history", None, community)
    assert history.status_code == 200, history.text
    return int(history.json()["total"])


EXAMPLES = {
    "example 1: the partial DocumentReference": (
        FHIR_JSON,
        lambda doc_id: {"resourceType": "DocumentReference", "id": doc_id, "securityLabel": LABELS},
    ),
    "example 2: JSON Patch": (
        JSON_PATCH,
        lambda doc_id: [{"op": "replace", "path": "/securityLabel", "value": LABELS}],
    ),
}


@pytest.mark.parametrize("key_kind", ["EC", "RSA"])
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_seed_examples_as_written(nhn: Service, example: str, key_kind: str) -> None:
    key = ProofKey(key_kind)
    doc_id = _document(nhn, key)
    media, body = EXAMPLES[example]
    epj = NhnClient(nhn, key)
    event = f"event-{uuid.uuid4()}"
    answer = epj.send(
        "PATCH",
        f"DocumentReference/{doc_id}?homeCommunityId={COMMUNITY}",
        body(doc_id),
        **media,
        **{"nhn-event-id": event},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["etag"] == 'W/"2"' and answer.json()["securityLabel"] == LABELS
    assert answer.headers["nhn-event-id"] == event
    provenance = NhnClient(nhn, key, ADMIN_SCOPE).send("GET", f"Provenance?target=DocumentReference/{doc_id}")
    sources = {
        e["what"]["identifier"]["system"]: e["what"]["identifier"]["value"]
        for entry in provenance.json()["entry"]
        for e in entry["resource"]["entity"]
        if entry["resource"]["target"][0]["reference"].endswith("/_history/2")
    }
    assert sources["urn:fhir-patch-worker:header:nhn-source-system"] == "EPJ System 1.0"
    assert sources["urn:fhir-patch-worker:header:nhn-event-id"] == event


PATCH = [{"op": "replace", "path": "/securityLabel", "value": LABELS}]


def _refusals(nhn: Service, epj: NhnClient, url: str) -> dict[str, tuple[int, str, dict[str, Any]]]:
    """case -> (status, what its diagnostics name, what the request changes: headers, or `path`/`body`)."""
    other_token = nhn.issuer.token(NHN_SCOPE)  # type: ignore[union-attr]
    return {
        "a proof of another method": (401, "htm", {"dpop": epj.key.proof("PUT", url, epj.token)}),
        "a proof for another URL": (401, "htu", {"dpop": epj.key.proof("PATCH", url + "x", epj.token)}),
        "a proof by another key": (401, "cnf.jkt", {"dpop": ProofKey().proof("PATCH", url, epj.token)}),
        "no proof": (401, "exactly one", {"dpop": "-"}),
        "the bound token as Bearer": (401, "DPoP-bound", {"authorization": f"Bearer {epj.token}"}),
        "an unbound Bearer token": (401, "DPoP-bound tokens only", {"authorization": f"Bearer {other_token}"}),
        "no nhn-source-system": (400, "nhn-source-system", {"nhn-source-system": "-"}),
        "an nhn-event-id over 200 characters": (400, "nhn-event-id", {"nhn-event-id": "e" * 201}),
        "fhirVersion=5.0": (406, "fhirVersion 5.0", {"accept": "application/fhir+json; fhirVersion=5.0"}),
        "another element than securityLabel": (
            400,
            "status",
            {"body": [{"op": "replace", "path": "/status", "value": "superseded"}]},
        ),
        "the scope alias on a Patient": (
            403,
            "Patient",
            {"path": "Patient/p-1", "body": [{"op": "replace", "path": "/active", "value": False}]},
        ),
    }


def _check_refusal(case: str, status: int, names: str, answer: httpx.Response) -> None:
    assert answer.status_code == status, f"{case}: {answer.status_code} {answer.text}"
    issue = answer.json()["issue"][0]
    assert names in issue["diagnostics"] and issue.get("expression"), f"{case}: {issue}"
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("DPoP "), case
        assert 'algs="RS256 RS512 ES256"' in answer.headers["www-authenticate"], case


def test_every_refusal_has_its_status_and_outcome_and_writes_nothing(nhn: Service) -> None:
    key = ProofKey("EC")
    doc_id = _document(nhn, key)
    epj = NhnClient(nhn, key)
    path = f"DocumentReference/{doc_id}"
    url = f"{nhn.fhir}/{path}"
    for case, (status, names, change) in _refusals(nhn, epj, url).items():
        changed = {**JSON_PATCH, **{k: v for k, v in change.items() if k not in ("path", "body")}}
        answer = epj.send("PATCH", change.get("path", path), change.get("body", PATCH), **changed)
        _check_refusal(case, status, names, answer)
    replayed = epj.headers("PATCH", url, **JSON_PATCH)
    routed = f"{url}?homeCommunityId={COMMUNITY}"
    first = epj.http.patch(routed, content=json.dumps(PATCH).encode(), headers=replayed)
    assert first.status_code == 200, first.text
    again = epj.http.patch(routed, content=json.dumps(PATCH).encode(), headers=replayed)
    _check_refusal("a replayed proof", 401, "used before", again)
    assert _versions(nhn, key, doc_id) == 2  # the one good PATCH; no refusal wrote anything


def test_an_async_job_keeps_its_event_id_for_its_poller(nhn: Service) -> None:
    key = ProofKey("EC")
    doc_id = _document(nhn, key)
    epj = NhnClient(nhn, key)
    patch = [{"op": "replace", "path": "/securityLabel", "value": LABELS}]
    accepted = epj.send(
        "PATCH",
        f"DocumentReference/{doc_id}",
        patch,
        **JSON_PATCH,
        prefer="respond-async",
        **{"nhn-event-id": "event-async-1"},
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["nhn-event-id"] == "event-async-1"
    location = accepted.headers["content-location"]
    assert location.endswith(f"?homeCommunityId={COMMUNITY}"), "the job's URL keeps its community"
    with _polling(nhn, NhnClient(nhn, key, ADMIN_SCOPE)) as polling:
        final = wait_jobs_final(polling, [location])[location]
    assert final.status_code == 200, final.text
    assert final.headers["nhn-event-id"] == "event-async-1"  # the job's, though the poller sent none
    assert final.json()["entry"][0]["response"]["status"].startswith("200")


def test_metadata_needs_no_nhn_header_and_no_token(nhn: Service) -> None:
    answer = nhn.http.get(f"{nhn.fhir}/metadata", headers={"accept": "application/fhir+json; fhirVersion=4.0.1"})  # type: ignore[attr-defined]
    assert answer.status_code == 200 and answer.json()["fhirVersion"] == "4.0.1"
    refused = nhn.http.get(f"{nhn.fhir}/metadata", headers={"accept": "application/fhir+json; fhirVersion=5.0"})  # type: ignore[attr-defined]
    assert refused.status_code == 406 and refused.json()["issue"][0]["expression"] == ["Accept"]


def test_two_communities_keep_the_same_id_apart(nhn: Service) -> None:
    key = ProofKey("EC")
    doc_id = _document(nhn, key, COMMUNITY)
    assert _document(nhn, key, f"urn:oid:{OTHER}", doc_id) == doc_id  # the urn:oid: form names the same community
    epj = NhnClient(nhn, key)
    for version, labels in ((2, LABELS), (3, LABELS[1:])):
        change = [{"op": "replace", "path": "/securityLabel", "value": labels}]
        answer = epj.send("PATCH", f"DocumentReference/{doc_id}", change, COMMUNITY, **JSON_PATCH)
        assert answer.status_code == 200 and answer.headers["etag"] == f'W/"{version}"', answer.text
        assert answer.headers["location"].endswith(f"/_history/{version}?homeCommunityId={COMMUNITY}")
    assert (_versions(nhn, key, doc_id, COMMUNITY), _versions(nhn, key, doc_id, OTHER)) == (3, 1)
    admin = NhnClient(nhn, key, ADMIN_SCOPE)
    theirs = admin.send("GET", f"DocumentReference/{doc_id}", None, OTHER).json()
    assert theirs["meta"]["versionId"] == "1" and theirs["securityLabel"] == LABELS[:1]
    page = admin.send("GET", f"DocumentReference/{doc_id}/_history?_count=1", None, COMMUNITY).json()
    following = {link["relation"]: link["url"] for link in page["link"]}
    assert following["next"].endswith(f"homeCommunityId={COMMUNITY}"), "a link to follow stays in its community"
    assert (
        admin.send("GET", following["next"].removeprefix(f"{nhn.fhir}/")).json()["entry"][0]["resource"]["meta"][
            "versionId"
        ]
        == "2"
    )
    provenance = admin.send("GET", f"Provenance?target=DocumentReference/{doc_id}", None, OTHER).json()
    assert len(provenance["entry"]) == 1, "the other community's Provenance holds only its own version"
    copies = _redis_keys(nhn, f"*{doc_id}*:cur")
    assert copies == {f"{{{COMMUNITY}/DocumentReference/{doc_id}}}", f"{{{OTHER}/DocumentReference/{doc_id}}}"}


def _redis_keys(nhn: Service, pattern: str) -> set[str]:
    """The resource parts (`{tenant/Type/id}`) of the service's Redis keys that match `pattern`."""
    import redis

    client = redis.Redis.from_url(nhn.env["FHIR_PATCH_REDIS_URL"])
    try:
        found = client.keys(f"{nhn.env['FHIR_PATCH_NAMESPACE']}:{pattern}")
        return {key.decode().split(":", 1)[1].rsplit(":", 1)[0] for key in found}
    finally:
        client.close()


def test_a_request_names_exactly_one_community_it_knows(nhn: Service) -> None:
    epj = NhnClient(nhn, ProofKey("EC"))
    path = f"DocumentReference/{uuid.uuid4()}"
    for query, names in [
        (None, "name one with ?homeCommunityId="),
        ("2.16.578.1.99", "names no community"),
        (f"{COMMUNITY}&homeCommunityId={OTHER}", "given 2 times"),
    ]:
        answer = epj.send("PATCH", path, PATCH, query, **JSON_PATCH)
        issue = answer.json()["issue"][0]
        assert answer.status_code == 400 and names in issue["diagnostics"], f"{query}: {answer.text}"
        assert issue["expression"] == ["homeCommunityId"], query


def test_a_job_is_found_only_in_its_community(nhn: Service) -> None:
    key = ProofKey("EC")
    doc_id = _document(nhn, key)
    accepted = NhnClient(nhn, key).send(
        "PATCH", f"DocumentReference/{doc_id}", PATCH, **JSON_PATCH, prefer="respond-async"
    )
    assert accepted.status_code == 202, accepted.text
    job = accepted.headers["content-location"].removeprefix(f"{nhn.fhir}/").split("?")[0]
    admin = NhnClient(nhn, key, ADMIN_SCOPE)
    assert admin.send("GET", job, None, OTHER).status_code == 404
    assert admin.send("DELETE", job, None, OTHER).status_code == 404, "nor cancelled from another community"
    assert admin.send("GET", job, None, None).status_code == 400


def test_an_idempotency_key_is_a_community_s_own(nhn: Service) -> None:
    key = ProofKey("EC")
    admin = NhnClient(nhn, key, ADMIN_SCOPE)
    doc_id = str(uuid.uuid4())
    attachment = {"contentType": "text/plain", "url": "http://example.org/a"}
    document = {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "status": "current",
        "content": [{"attachment": attachment}],
    }
    line = json.dumps({"request": {"method": "PUT", "url": f"DocumentReference/{doc_id}"}, "resource": document})
    headers = {"content-type": "application/fhir+ndjson", "idempotency-key": f"feed-{RUN}"}
    for community in (COMMUNITY, OTHER):  # one key, two communities: two feeds, each applied in its registry
        answer = admin.send("POST", "$bulk-submit", (line + "\n").encode(), community, **headers)
        assert answer.status_code == 202, answer.text
        with _polling(nhn, admin) as polling:
            assert wait_group(polling, answer.headers["content-location"]).status_code == 200
        assert _versions(nhn, key, doc_id, community) == 1, community


def _polling(nhn: Service, poller: NhnClient) -> httpx.Client:
    """An httpx client whose GETs are the poller's requests (proof, headers), for the waiting helpers."""

    class Polling(httpx.Client):
        def get(self, url: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
            return poller.send("GET", str(url).removeprefix(f"{nhn.fhir}/"), **{"nhn-event-id": "-"})

    return Polling()


def test_an_unreachable_registry_is_503_with_retry_after(nhn: Service) -> None:
    answer = NhnClient(nhn, ProofKey("EC"), ADMIN_SCOPE).send("GET", "DocumentReference/x", None, DOWN)
    assert answer.status_code == 503 and answer.headers.get("retry-after"), answer.text
    assert answer.json()["issue"][0]["code"] == "transient"


def test_a_transaction_and_a_batch_take_their_request_s_community(nhn: Service) -> None:
    key = ProofKey("EC")
    doc_id = _document(nhn, key, COMMUNITY)
    _document(nhn, key, OTHER, doc_id)
    admin = NhnClient(nhn, key, ADMIN_SCOPE)
    entry = {
        "request": {"method": "PATCH", "url": f"DocumentReference/{doc_id}"},
        "resource": {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps(PATCH).encode()).decode(),
        },
    }
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry]}
        answer = admin.send("POST", "", bundle, OTHER, **FHIR_JSON)
        assert answer.status_code == 200, answer.text
        assert answer.json()["entry"][0]["response"]["status"].startswith("200"), f"{kind}: {answer.text}"
    assert (_versions(nhn, key, doc_id, OTHER), _versions(nhn, key, doc_id, COMMUNITY)) == (2, 1)
