"""Turn jobs into HTTP answers: the synchronous FHIR answer, 202 Accepted, and the polling answers."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from api.http import fhir_response, http_date, outcome_response
from api.intake import Finished
from worker.model.jobs import Job, JobState, outcome_of
from worker.model.results import etag, result_bundle, version_location

RETRY_AFTER_SECONDS = 1


def async_location(base: str, job_id: str) -> str:
    return f"{base}/_async/{job_id}"


def version_headers(done: Finished, base: str) -> dict[str, str]:
    result = done.job.result
    assert result is not None
    headers: dict[str, str] = {}
    if result.version_id is not None:
        request = done.job.request
        headers["ETag"] = etag(result.version_id)
        headers["Location"] = version_location(base, request.resource_type, request.resource_id, result.version_id)
    if result.last_updated is not None:
        headers["Last-Modified"] = http_date(result.last_updated)
    return headers


def sync_answer(done: Finished, base: str, prefer: dict[str, str]) -> Response:
    """What a FHIR server answers to the interaction: the resource (or what Prefer asks for) with its version
    headers."""
    result = done.job.result
    assert result is not None
    if not result.succeeded:
        return outcome_response(result.status, result.outcome or outcome_of("error", "exception", "Failed"))
    headers = version_headers(done, base)
    wanted = prefer.get("return", "representation")
    if wanted == "minimal":
        return fhir_response(None, result.status, headers)
    if wanted == "operationoutcome" or done.text is None:
        return fhir_response(_success_outcome(done), result.status, headers)
    return fhir_response(done.text, result.status, headers)


def _success_outcome(done: Finished) -> dict[str, Any]:
    result = done.job.result
    assert result is not None
    if result.outcome and done.text is None:
        return result.outcome
    summary = outcome_of(
        "information",
        "informational",
        f"{done.job.request.key}: {done.job.request.action.value} applied, version {result.version_id}",
    )
    if result.outcome:  # warnings collected while patching
        summary["issue"].extend(result.outcome.get("issue", []))
    return summary


def accepted_answer(job: Job, base: str) -> Response:
    """202: the job is durably recorded and will be applied; poll Content-Location."""
    location = async_location(base, job.id)
    outcome = outcome_of("information", "informational", f"Accepted as job {job.id}; poll {location}")
    return fhir_response(outcome, 202, {"Content-Location": location, "Retry-After": str(RETRY_AFTER_SECONDS)})


def poll_answer(job: Job, done: Finished | None, base: str) -> Response:
    """The FHIR asynchronous pattern: 202 with progress while pending, then 200 with a batch-response Bundle."""
    if done is None or job.state in (JobState.ACCEPTED, JobState.RUNNING):
        progress = "queued" if job.state == JobState.ACCEPTED else "applying"
        return fhir_response(None, 202, {"X-Progress": progress, "Retry-After": str(RETRY_AFTER_SECONDS)})
    return fhir_response(result_bundle(done.job, done.text, base), 200)
