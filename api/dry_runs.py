"""Dry runs of writes (`?dryRun=true`): the real request's checks, scopes, policies and answer; nothing stored.

The routes check a dry run exactly as the real request (same code, same order), then plan it with
worker/submission/dry_run.py instead of submitting it. The answer is the real one, and says it is a dry run:
- one resource: the headers `X-Dry-Run: true`, `X-Dry-Run-Based-On` (the version it was planned on, or
  `none`) and `X-Dry-Run-Queued-Ahead` (jobs queued on the resource that would apply first, unseen);
- a Bundle: `X-Dry-Run: true`, and on each written entry's `response` two extensions with the same facts;
- a feed: each result line carries `basedOnVersion` and `queuedAhead`.
With `Accept: application/json-patch+json` (RFC 6902) or `Prefer: return=diff` (FHIRPath Patch), a dry run of
one resource answers the diff it would make instead of the resource.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from api.answers import sync_answer, version_headers
from api.diff_answers import Wanted, diff_response, diff_wanted
from api.intake import Finished
from worker.errors import InvalidRequest
from worker.model.jobs import JobResult
from worker.model.results import response_element
from worker.model.versions import StoredVersion
from worker.patch.diff import JSON_PATCH_MEDIA
from worker.patch.fhir_json import loads
from worker.submission.dry_run import DryEnd

DRY_RUN = "X-Dry-Run"
BASED_ON_URL = "urn:fhir-patch-worker:dry-run:based-on-version"
QUEUED_AHEAD_URL = "urn:fhir-patch-worker:dry-run:queued-ahead"


def dry_run_asked(request: Request) -> bool:
    """`?dryRun=true`; `false` or absent is a real write; anything else is 400 naming the parameter."""
    raw = request.query_params.get("dryRun", "false").lower()
    if raw not in ("true", "false"):
        raise InvalidRequest(f"dryRun must be true or false, not {raw!r}", "dryRun")
    return raw == "true"


def based_on(before: StoredVersion | None) -> int | None:
    return before.version_id if before is not None else None


def dry_headers(before: StoredVersion | None, queued_ahead: int) -> dict[str, str]:
    version = based_on(before)
    return {
        DRY_RUN: "true",
        "X-Dry-Run-Based-On": "none" if version is None else str(version),
        "X-Dry-Run-Queued-Ahead": str(queued_ahead),
    }


def diff_asked(request: Request, prefer: dict[str, str]) -> Wanted | None:
    """The diff a dry run of one resource answers instead of the resource (checked before anything is read), or
    None: `Accept: application/json-patch+json` (RFC 6902) or `Prefer: return=diff` (FHIRPath Patch)."""
    if JSON_PATCH_MEDIA in request.headers.get("accept", "").lower() or prefer.get("return") == "diff":
        return diff_wanted(request)
    return None


def single_answer(end: DryEnd, base: str, prefer: dict[str, str], diff: Wanted | None) -> Response:
    """The answer the real request would get, marked as a dry run; or the diff it would make, when asked."""
    headers = dry_headers(end.before, end.queued_ahead)
    result, done = end.job.result, Finished(end.job, end.text)
    assert result is not None
    if diff is not None and result.succeeded and end.text is not None:
        job = end.job.request
        empty = {"resourceType": job.resource_type, "id": job.resource_id}
        old = end.before.resource() if end.before is not None and not end.before.deleted else empty
        headers.update(version_headers(done, base))
        return diff_response(diff, old, loads(end.text), result.status, headers)
    answer = sync_answer(done, base, prefer)
    answer.headers.update(headers)
    return answer


def marks(before: StoredVersion | None, queued_ahead: int) -> list[dict[str, Any]]:
    """The extensions a dry-run Bundle entry's `response` carries."""
    version = based_on(before)
    found: list[dict[str, Any]] = [] if version is None else [{"url": BASED_ON_URL, "valueInteger": version}]
    return [*found, {"url": QUEUED_AHEAD_URL, "valueInteger": queued_ahead}]


def dry_entry(
    key: str, result: JobResult, text: str | None, before: StoredVersion | None, queued_ahead: int, base: str
) -> dict[str, Any]:
    """A Bundle entry answering one would-be write: the resource as it would be, and the response marked."""
    response = {**response_element(result, key, base), "extension": marks(before, queued_ahead)}
    if text is None or not result.succeeded:
        return {"response": response}
    return {"fullUrl": f"{base}/{key}", "resource": loads(text), "response": response}
