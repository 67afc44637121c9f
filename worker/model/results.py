"""How a finished job is answered: the FHIR `batch-response` Bundle (polling, callbacks) and its parts.

Pure functions over a Job and the stored text of the version it made.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.model.changes import fhir_instant
from worker.model.jobs import Job, JobResult
from worker.model.versions import StoredVersion
from worker.patch.fhir_json import loads_checked_before


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def version_location(base: str, resource_type: str, resource_id: str, version_id: int) -> str:
    path = f"{resource_type}/{resource_id}/_history/{version_id}"
    return f"{base}/{path}" if base else path


def response_element(result: JobResult, key: str | None, base: str) -> dict[str, Any]:
    """Bundle.entry.response: status, and etag/lastModified/location for a version of `key` ("Type/id"), outcome when
    there is one."""
    response: dict[str, Any] = {"status": result.status_line}
    if result.version_id is not None and key:
        resource_type, resource_id = key.split("/", 1)
        response["etag"] = etag(result.version_id)
        response["location"] = version_location(base, resource_type, resource_id, result.version_id)
    if isinstance(result.last_updated, datetime):
        response["lastModified"] = fhir_instant(result.last_updated)
    if result.outcome:
        response["outcome"] = result.outcome
    return response


def written_entry(key: str, version: StoredVersion | None, response: dict[str, Any], base: str) -> dict[str, Any]:
    """A Bundle entry answering a write: `response`, with the resource as that version holds it (none for a
    deletion, or when the version is not known)."""
    if version is not None and not version.deleted:
        return {"fullUrl": f"{base}/{key}", "resource": version.resource(), "response": response}
    return {"response": response}


def version_wanted(key: str, version_id: int) -> tuple[str, str, int]:
    """(type, id, version) of version `version_id` of `Type/id`, as ResourceStore.versions reads them."""
    resource_type, resource_id = key.split("/", 1)
    return resource_type, resource_id, version_id


def result_bundle(job: Job, resource_text: str | None, base: str, *, include_resource: bool = True) -> dict[str, Any]:
    """The FHIR asynchronous-interaction answer: a batch-response Bundle whose one entry is this job's."""
    assert job.result is not None, "only finished jobs have a result bundle"
    entry: dict[str, Any] = {}
    if include_resource and resource_text is not None and job.result.succeeded:
        entry["fullUrl"] = f"{base}/{job.request.key}" if base else job.request.key
        entry["resource"] = loads_checked_before(resource_text)
    entry["response"] = response_element(job.result, job.request.key, base)
    return {"resourceType": "Bundle", "id": job.id, "type": "batch-response", "entry": [entry]}
