"""The FHIR REST routes: create, update, patch, delete (queued per resource), read, vread, history, metadata.

Routes only adapt HTTP: check the envelope and the body (parse before any
I/O), build a JobRequest, and let the intake accept it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.answers import accepted_answer, sync_answer
from api.auth import Caller
from api.capabilities import capability_statement
from api.conditional import parse_criterion
from api.dependencies import Connections
from api.deps import acting, connections, fhir_base, idempotency_key, query_number, resource_type_named
from api.dry_runs import diff_asked, dry_run_asked, single_answer
from api.entries import checked_resource
from api.http import check_id, fhir_response, http_date, parse_if_match, parse_prefer, parse_snapshot_mode, read_body
from api.intake import Finished
from api.tenancy import in_community
from worker.errors import InvalidRequest, ResourceGone, ResourceNotFound, UnsupportedMediaType
from worker.model.access import CREATE, DELETE, READ, UPDATE, Principal
from worker.model.callback_targets import CallbackRefused, checked_callback
from worker.model.changes import fhir_instant
from worker.model.clock import utc_now
from worker.model.jobs import Action, Job, JobRequest, JobState, body_digest
from worker.model.results import etag, version_location
from worker.model.versions import StoredVersion
from worker.patch import parse_patch
from worker.patch.fhir_json import dumps, loads
from worker.patch.fhir_xml import parse_xml, xml_to_resource
from worker.submission import Submission
from worker.submission.dry_run import DryEnd

router = APIRouter(prefix="/fhir")
_PATCH_PARAMETERS = ("dryRun", "_strict")  # a conditional PATCH's own parameters, beside its condition
_HISTORY_METHODS = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    """The CapabilityStatement: the one route under /fhir that needs no token."""
    disabled = connections(request).settings.auth_disabled
    return fhir_response(await anyio.to_thread.run_sync(capability_statement, fhir_base(request), disabled))


@router.patch("/{resource_type}/{resource_id}")
async def patch(resource_type: str, resource_id: str, request: Request, caller: Caller) -> Response:
    caller.require(resource_type_named(resource_type), UPDATE)
    job = JobRequest(
        Action.PATCH,
        resource_type,
        check_id(resource_id),
        await _body(request),
        request.headers.get("content-type", ""),
        parse_if_match(request.headers.get("if-match")),
        strict=request.query_params.get("_strict", "").lower() == "true",
    )
    # A malformed patch is refused before anything is read or written; parsed off the event loop, so that one costly
    # body never holds up other requests (its cost is bounded by the engine's limits), in the same thread trip as
    # the submission.
    return await _submit(request, job, caller, lambda: parse_patch(job.body, job.content_type, strict=job.strict))


@router.patch("/{resource_type}")
async def conditional_patch(resource_type: str, request: Request, caller: Caller) -> Response:
    """PATCH [base]/Type?identifier=system|value: the one matching resource (404 none, 412 several)."""
    caller.require(resource_type_named(resource_type), UPDATE)  # before the index is asked anything
    query = request.url.query
    if not query:
        raise InvalidRequest("PATCH [base]/Type needs a condition: ?identifier=system|value or ?_id=id", "request.url")
    resolver = connections(request).conditional
    resource_id = await anyio.to_thread.run_sync(resolver.resolve, resource_type, query, _PATCH_PARAMETERS)
    return await patch(resource_type, resource_id, request, caller)


@router.get("/{resource_type}")
async def search(resource_type: str, request: Request, caller: Caller) -> Response:
    """GET [base]/Type?identifier=system|value (also |value, value, and system| for every value of a system) or
    ?_id=id: a searchset Bundle, by key lookups. A `system|` search is paged (`next` link, no total)."""
    caller.require(resource_type_named(resource_type), READ)
    criterion = parse_criterion(request.url.query, allowed_extra=("_count", "_page"))
    count = query_number(request, "_count", 100, 1, 1000)
    resolver = connections(request).conditional
    query = urlencode({criterion.name: criterion.token, "_count": count})
    self_url = f"{fhir_base(request)}/{resource_type}?{query}"
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": in_community(request, self_url)}],
    }
    if criterion.system_only:
        token = request.query_params.get("_page", "")
        page = await anyio.to_thread.run_sync(resolver.search_system, resource_type, criterion, count, token)
        found = page.found
        if page.next_token:
            bundle["link"].append(
                {"relation": "next", "url": in_community(request, f"{self_url}&_page={page.next_token}")}
            )
    else:
        found = await anyio.to_thread.run_sync(resolver.search, resource_type, criterion)
        bundle["total"] = len(found)
    base = fhir_base(request)
    bundle["entry"] = [
        {"fullUrl": f"{base}/{v.key}", "resource": v.resource(), "search": {"mode": "match"}} for v in found[:count]
    ]
    return fhir_response(bundle)


@router.put("/{resource_type}/{resource_id}")
async def update(resource_type: str, resource_id: str, request: Request, caller: Caller) -> Response:
    """Update, or create at this id: either permission admits it here; the worker checks the one it turns out to
    need."""
    caller.require(resource_type_named(resource_type), UPDATE, CREATE)
    body, content_type = await _body(request), request.headers.get("content-type", "application/fhir+json")
    resource, warnings = await anyio.to_thread.run_sync(
        _resource_body, content_type, resource_type, body, check_id(resource_id), _lenient(request)
    )
    job = JobRequest(
        Action.UPDATE,
        resource_type,
        resource_id,
        dumps(resource).encode(),
        "application/fhir+json",
        parse_if_match(request.headers.get("if-match")),
        parse_snapshot_mode(request.headers.get("x-meta-snapshot-mode")),
        warnings=warnings,
    )
    return await _submit(request, job, caller)


@router.post("/{resource_type}")
async def create(resource_type: str, request: Request, caller: Caller) -> Response:
    caller.require(resource_type_named(resource_type), CREATE)
    body, content_type = await _body(request), request.headers.get("content-type", "application/fhir+json")
    resource, warnings = await anyio.to_thread.run_sync(
        _resource_body, content_type, resource_type, body, None, _lenient(request)
    )
    resource_id = str(uuid.uuid4())
    job = JobRequest(
        Action.CREATE,
        resource_type,
        resource_id,
        dumps({**resource, "id": resource_id}).encode(),
        "application/fhir+json",
        warnings=warnings,
    )
    return await _submit(request, job, caller)


@router.delete("/{resource_type}/{resource_id}")
async def delete(resource_type: str, resource_id: str, request: Request, caller: Caller) -> Response:
    caller.require(resource_type_named(resource_type), DELETE)
    job = JobRequest(
        Action.DELETE, resource_type, check_id(resource_id), if_match=parse_if_match(request.headers.get("if-match"))
    )
    return await _submit(request, job, caller)


@router.get("/{resource_type}/{resource_id}")
async def read(resource_type: str, resource_id: str, request: Request, caller: Caller) -> Response:
    caller.require(resource_type_named(resource_type), READ)
    latest = await anyio.to_thread.run_sync(connections(request).newest, resource_type, check_id(resource_id))
    if latest is None:
        raise ResourceNotFound(f"{resource_type}/{resource_id} does not exist", "id")
    return _version_answer(latest, request)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
async def vread(resource_type: str, resource_id: str, version_id: str, request: Request, caller: Caller) -> Response:
    caller.require(resource_type_named(resource_type), READ)
    if not (version_id.isascii() and version_id.isdigit() and len(version_id) <= 9):
        raise InvalidRequest(f"Version {version_id!r} is not a version number", "vid")
    store = connections(request).database.resources
    version = await anyio.to_thread.run_sync(
        store.version, resource_type_named(resource_type), check_id(resource_id), int(version_id)
    )
    if version is None:
        raise ResourceNotFound(f"{resource_type}/{resource_id} has no version {version_id}", "vid")
    return _version_answer(version, request)


@router.get("/{resource_type}/{resource_id}/_history")
async def history(resource_type: str, resource_id: str, request: Request, caller: Caller) -> Response:
    caller.require(resource_type_named(resource_type), READ)
    count = query_number(request, "_count", 100, 1, 1000)
    offset = query_number(request, "_offset", 0, 0, 10**9)
    store = connections(request).database.resources
    total, versions = await anyio.to_thread.run_sync(store.history, resource_type, check_id(resource_id), count, offset)
    if not total:
        raise ResourceNotFound(f"{resource_type}/{resource_id} does not exist", "id")
    base = fhir_base(request)
    page = f"{base}/{resource_type}/{resource_id}/_history?_count={count}&_offset="
    links = [{"relation": "self", "url": in_community(request, f"{page}{offset}")}]
    if offset + count < total:  # every version is reachable: follow `next` to the first one
        links.append({"relation": "next", "url": in_community(request, f"{page}{offset + count}")})
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": links,
        "entry": [_history_entry(v, base) for v in versions],
    }
    return fhir_response(bundle)


def _history_entry(version: StoredVersion, base: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"{base}/{version.key}"}
    if not version.deleted:
        entry["resource"] = version.resource()
    method = _HISTORY_METHODS.get(version.action, "DELETE" if version.deleted else "PUT")
    entry["request"] = {"method": method, "url": version.key if method != "POST" else version.resource_type}
    entry["response"] = {
        "status": "201 Created" if version.version_id == 1 else "200 OK",
        "etag": etag(version.version_id),
        "lastModified": fhir_instant(version.last_updated),
    }
    return entry


def _version_answer(version: StoredVersion, request: Request) -> Response:
    if version.deleted:
        raise ResourceGone(f"{version.key} was deleted (version {version.version_id})", "id")
    headers = {
        "ETag": etag(version.version_id),
        "Last-Modified": http_date(version.last_updated),
        "Content-Location": version_location(
            fhir_base(request), version.resource_type, version.resource_id, version.version_id
        ),
    }
    return fhir_response(version.text, 200, headers)


async def _body(request: Request) -> bytes:
    return await read_body(request, connections(request).settings.max_body_bytes)


def _lenient(request: Request) -> bool:
    return connections(request).settings.store_validation == "lenient"


def _resource_body(
    content_type: str, resource_type: str, body: bytes, resource_id: str | None, lenient: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A whole resource for create/update: its media type, type and id checked, and valid FHIR R4."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("application/fhir+json", "application/json"):
        resource = loads(body, what=f"{resource_type} resource")
    elif kind in ("application/fhir+xml", "application/xml"):
        resource = xml_to_resource(parse_xml(body, f"{resource_type} resource"))
    else:
        raise UnsupportedMediaType(
            f"Content-Type {kind!r} is not a FHIR resource format; use application/fhir+json", "Content-Type"
        )
    return checked_resource(resource, resource_type, resource_id, lenient)


def _nothing() -> None:
    pass


async def _submit(
    request: Request, job: JobRequest, caller: Principal, check: Callable[[], object] = _nothing
) -> Response:
    """Submit `job` once `check` (run off the event loop, before any I/O) has not refused it."""
    conn = connections(request)
    job = acting(request, caller, job)
    prefer = parse_prefer(request.headers.get("prefer"))
    callback = request.headers.get("x-callback-url")
    if callback is not None:
        check = partial(_check_callback, conn, callback, check)
    if dry_run_asked(request):
        return await _dry_run(request, job, check, prefer)
    digest = body_digest(
        request.method,
        job.key,
        job.content_type,
        job.body,
        str(job.if_match),
        ",".join(job.snapshot_mode),
        callback or "",
    )
    submission = Submission(
        job, digest, callback, idempotency_key(request, caller), request.headers.get("idempotency-key")
    )
    wait = None if "respond-async" in prefer else conn.settings.sync_wait_seconds
    answer = await conn.intake.submit(submission, wait, check)
    base = fhir_base(request)
    if isinstance(answer, Finished):
        return sync_answer(answer, base, prefer)
    return accepted_answer(answer, base)


async def _dry_run(request: Request, job: JobRequest, check: Callable[[], object], prefer: dict[str, str]) -> Response:
    """The request checked as the real one (`check` first, as the intake runs it), then planned, not submitted."""
    diff = diff_asked(request, prefer)
    session = connections(request).dry_run.session()

    def checked_plan() -> DryEnd:
        check()
        return session.jobs([Job(Job.new_id(), job, JobState.ACCEPTED, utc_now())])[0]

    end = await anyio.to_thread.run_sync(checked_plan)
    return single_answer(end, fhir_base(request), prefer, diff)


def _check_callback(conn: Connections, url: str, check: Callable[[], object]) -> None:
    """The request's own checks, then its callback URL's (which may resolve the host)."""
    check()
    if not conn.settings.callback_secret:
        raise InvalidRequest(
            "X-Callback-URL is not available: no FHIR_PATCH_CALLBACK_SECRET is configured", "X-Callback-URL"
        )
    try:
        checked_callback(url, conn.settings.callback_allow)
    except CallbackRefused as exc:
        raise InvalidRequest(f"X-Callback-URL {url!r} is not allowed: {exc}", "X-Callback-URL") from exc
