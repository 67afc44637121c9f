"""The storage rule, enforced: every command the service sends to MongoDB while it serves every route and runs
every worker path is an insert, or a lookup, update or delete by `_id` equality, unless its collection is one
declared bounded by work in flight (worker/storage/keyed.py)."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.fhirpath import fhirpath_replace
from tests.support.processes import wait_for
from tests.support.service import Service, running_service, wait_jobs_final
from worker.storage.keyed import BOUNDED_COLLECTIONS

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JSON_PATCH = {"content-type": "application/json-patch+json"}
WRITES = ("find", "update", "delete", "findAndModify", "count", "aggregate", "distinct")


@pytest.fixture()
def receiver() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _workload(service: Service, hook: str) -> None:
    with service.client() as client:
        org = {"resourceType": "Organization", "identifier": [{"system": "urn:s", "value": "v1"}], "name": "a"}
        oid = client.post("Organization", json=org).headers["location"].split("/")[-3]
        _writes(client)
        for path in (
            "Patient/p1",
            "Patient/p1/_history/2",
            "Patient/p1/_history?_count=2",
            f"Organization/{oid}",
            "Provenance?target=Patient/p1",
            "Provenance?target=Patient/p1/_history/1",
            "metadata",
        ):
            assert client.get(path).status_code == 200, path
        _async_paths(client, hook)
        _bundles_and_feeds(client)
        assert client.delete("Patient/p1").status_code == 200
        assert client.get("Patient/p1").status_code == 410


FHIRPATH_REPLACE_GENDER = fhirpath_replace("Patient.gender", {"valueCode": "female"})


def _writes(client: httpx.Client) -> None:
    """PUT (create, update), and PATCH in each format and by identifier."""
    assert (
        client.put(
            "Patient/p1", json={"resourceType": "Patient", "id": "p1", "identifier": [{"value": "x"}]}
        ).status_code
        == 201
    )
    assert client.put("Patient/p1", json={"resourceType": "Patient", "id": "p1", "active": True}).status_code == 200
    gender = b'[{"op":"add","path":"/gender","value":"male"}]'
    assert client.patch("Patient/p1", content=gender, headers=JSON_PATCH).status_code == 200
    fhir_json = {"content-type": "application/fhir+json"}
    assert client.patch("Patient/p1", json=FHIRPATH_REPLACE_GENDER, headers=fhir_json).status_code == 200
    xml = b'<Patch xmlns="http://hl7.org/fhir"><replace sel="/Patient/gender/@value">other</replace></Patch>'
    assert (
        client.patch("Patient/p1", content=xml, headers={"content-type": "application/xml-patch+xml"}).status_code
        == 200
    )
    for query, name in (("urn:s|v1", "b"), ("v1", "c")):
        rename = json.dumps([{"op": "replace", "path": "/name", "value": name}]).encode()
        assert client.patch(f"Organization?identifier={query}", content=rename, headers=JSON_PATCH).status_code == 200


def _async_paths(client: httpx.Client, hook: str) -> None:
    accepted = client.patch(
        "Patient/p1",
        content=b'[{"op":"add","path":"/active","value":false}]',
        headers={**JSON_PATCH, "prefer": "respond-async", "x-callback-url": hook, "idempotency-key": "k1"},
    )
    again = client.patch(
        "Patient/p1",
        content=b'[{"op":"add","path":"/active","value":false}]',
        headers={**JSON_PATCH, "prefer": "respond-async", "x-callback-url": hook, "idempotency-key": "k1"},
    )
    assert again.headers["content-location"] == accepted.headers["content-location"]
    wait_jobs_final(client, [accepted.headers["content-location"]])
    job = accepted.headers["content-location"].rsplit("/", 1)[1]
    assert client.delete(f"_async/{job}").status_code == 409


def _bundles_and_feeds(client: httpx.Client) -> None:
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(b'[{"op":"add","path":"/active","value":true}]').decode(),
    }
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": binary, "request": {"method": "PATCH", "url": "Patient/p1"}},
            {"request": {"method": "GET", "url": "Patient/p1"}},
        ],
    }
    assert client.post("", json=batch).status_code == 200
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p2"}, "request": {"method": "PUT", "url": "Patient/p2"}},
            {"resource": binary, "request": {"method": "PATCH", "url": "Organization?identifier=urn:s|v1"}},
            {"request": {"method": "GET", "url": "Patient/p1"}},
        ],
    }
    assert client.post("", json=transaction).status_code == 200
    _feed(client)
    slow = client.post("", json={**batch, "entry": batch["entry"][:1]}, headers={"prefer": "respond-async"})
    client.delete(slow.headers["content-location"])  # cancel a group (whatever has not started)


def _feed(client: httpx.Client) -> None:
    def put(n: int) -> str:
        return json.dumps(
            {
                "resource": {"resourceType": "Patient", "id": f"f{n}"},
                "request": {"method": "PUT", "url": f"Patient/f{n}"},
            }
        )

    lines = [put(n) for n in range(5)] + ["{}"]
    feed = client.post(
        "$bulk-submit",
        content="\n".join(lines).encode(),
        headers={"content-type": "application/fhir+ndjson", "idempotency-key": "feed-1"},
    )
    location = feed.headers["content-location"]
    wait_jobs_final(client, [location])
    assert client.get(f"{location}/results").status_code == 200


def test_every_mongodb_query_is_by_key_or_on_a_bounded_collection(
    isolated_env: dict[str, str], tmp_path: Path, receiver: str
) -> None:
    log = tmp_path / "mongodb-commands.ndjson"
    env = {
        **isolated_env,
        "FHIR_PATCH_MONGODB_COMMAND_LOG": str(log),
        "FHIR_PATCH_CALLBACK_SECRET": SECRET,
        "FHIR_PATCH_CALLBACK_ALLOW": "http://127.0.0.1:*/",
        "FHIR_PATCH_JOB_RETENTION_SECONDS": "2",
    }
    with running_service(env, tmp_path, workers=1) as service:
        _workload(service, receiver)
        with service.client() as client:  # the reconciler's passes expire jobs and groups: wait until they have
            location = client.patch(
                "Patient/f0",
                content=b'[{"op":"add","path":"/active","value":true}]',
                headers={**JSON_PATCH, "prefer": "respond-async"},
            ).headers["content-location"]
            wait_for(lambda: client.get(location).status_code == 404, 90, "a finished job to expire", interval=0.5)
    commands = [json.loads(line) for line in log.read_text().splitlines()]
    seen = Counter(c["command"] for c in commands)
    assert {"insert", "find", "update", "delete"} <= set(seen), seen
    assert len({c["pid"] for c in commands}) >= 2, "commands of the API and of the worker are both recorded"
    violations = [
        c
        for c in commands
        if c["command"] in WRITES
        and c["collection"] not in BOUNDED_COLLECTIONS
        and (any(f != "_id=" for f in c["filters"]) or c["sort"])
    ]
    summary = Counter(f"{c['command']} {c['collection']} {c['filters']} sort={c['sort']}" for c in violations)
    print(json.dumps({"commands": len(commands), "by_command": seen, "violations": len(violations)}))
    assert not violations, "queries that are not by key, on collections not bounded by work in flight:\n" + "\n".join(
        f"{n} x {s}" for s, n in summary.most_common()
    )
