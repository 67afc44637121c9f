"""The FHIR R4 Provenance of a committed version (pure).

Each version document carries its Provenance (the `prov` field of
`history/Type/id/n`): the version and its audit record are one insert, so a
crash can never leave one without the other, and reading them is the same
`_id` lookup. `GET /fhir/Provenance?target=...` reads them from there.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from worker.model.access import Actor
from worker.model.changes import fhir_instant
from worker.model.jobs import JobRequest
from worker.patch.fhir_json import dumps

DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
CLIENT_SYSTEM = "urn:ietf:params:oauth:client-id"
SUBJECT_SYSTEM = "urn:ietf:params:oauth:jwt:sub"
JOB_SYSTEM = "urn:fhir-patch-worker:job"
REQUEST_SYSTEM = "urn:fhir-patch-worker:x-request-id"
HEADER_SYSTEM = "urn:fhir-patch-worker:header:"  # + the header's name: FHIR_PATCH_REQUIRED/CORRELATION_HEADER(S)
_ACTIVITY = {"patch": "PATCH", "create": "CREATE", "delete": "DELETE"}


def provenance_id(key: str, version_id: int) -> str:
    """A FHIR id (64 characters at most) unique to one version."""
    return hashlib.sha256(f"{key}/{version_id}".encode()).hexdigest()[:40]


def activity(action: str, version_id: int, deleted: bool) -> str:
    if deleted:
        return "DELETE"
    if action == "update":
        return "CREATE" if version_id == 1 else "UPDATE"
    return _ACTIVITY.get(action, "UPDATE")


def provenance_for(
    key: str, version_id: int, recorded: str, action: str, deleted: bool, actor: Actor | None, job_id: str
) -> dict[str, Any]:
    """The Provenance of version `version_id` of `key` (`recorded` is the version's lastUpdated instant)."""
    who = actor or Actor("unknown", "unknown")
    code = activity(action, version_id, deleted)
    entities = [{"role": "source", "what": {"identifier": {"system": JOB_SYSTEM, "value": job_id}}}]
    if who.request_id:
        entities.append({"role": "source", "what": {"identifier": {"system": REQUEST_SYSTEM, "value": who.request_id}}})
    for name, value in who.trace.headers:
        entities.append({"role": "source", "what": {"identifier": {"system": HEADER_SYSTEM + name, "value": value}}})
    return {
        "resourceType": "Provenance",
        "id": provenance_id(key, version_id),
        "target": [{"reference": f"{key}/_history/{version_id}"}],
        "recorded": recorded,
        "activity": {"coding": [{"system": DATA_OPERATION, "code": code}]},
        "agent": [
            {
                "type": _participant("performer"),
                "who": {"identifier": {"system": CLIENT_SYSTEM, "value": who.client_id}},
            },
            {"type": _participant("author"), "who": {"identifier": {"system": SUBJECT_SYSTEM, "value": who.subject}}},
        ],
        "entity": entities,
    }


def _participant(code: str) -> dict[str, Any]:
    return {"coding": [{"system": PARTICIPANT_TYPE, "code": code}]}


def provenance_text(request: JobRequest, version_id: int, when: datetime, deleted: bool, job_id: str) -> str:
    """The stored Provenance (FHIR JSON text) of the version `request` makes."""
    return dumps(
        provenance_for(
            request.key, version_id, fhir_instant(when), request.action.value, deleted, request.actor, job_id
        )
    )
