"""What each job action does to a resource: pure functions, no I/O.

Given the request and the resource's current state, a handler returns the
planned change (the new resource, or a deletion, and the status to answer) or
raises a FhirError. The service stamps `meta.versionId`/`meta.lastUpdated`
and commits; nothing here touches storage, so it is tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.errors import (
    Issue,
    MalformedPatch,
    ResourceExists,
    ResourceGone,
    ResourceNotFound,
    VersionMismatch,
    operation_outcome,
)
from worker.model.access import CREATE, UPDATE, forbidden_issues
from worker.model.jobs import CHANGED_NOTHING, Action, JobRequest
from worker.patch import parse_patch
from worker.patch.fhir_json import loads, same_json
from worker.patch.policy import ElementPolicies, policy_violations

ClientPolicies = Mapping[str, ElementPolicies]


@dataclass(frozen=True)
class Existing:
    """The resource's current state as a handler sees it."""

    version_id: int
    resource: dict[str, Any] | None  # None: the current version is a deletion

    @property
    def deleted(self) -> bool:
        return self.resource is None


@dataclass(frozen=True)
class PlannedChange:
    """`write` False: answer without a new version (e.g. deleting what is already deleted)."""

    status: int
    resource: dict[str, Any] | None
    outcome: dict[str, Any] | None = None
    write: bool = True


Handler = Callable[[JobRequest, Existing | None, ElementPolicies], PlannedChange]


def _live(request: JobRequest, existing: Existing | None) -> Existing:
    if existing is None:
        raise ResourceNotFound(f"{request.key} does not exist", request.resource_type)
    if existing.deleted:
        raise ResourceGone(f"{request.key} was deleted (version {existing.version_id})", request.resource_type)
    _check_if_match(request, existing)
    return existing


def _check_if_match(request: JobRequest, existing: Existing | None) -> None:
    if request.if_match is None:
        return
    current = existing.version_id if existing else None
    if current != request.if_match:
        raise VersionMismatch(
            f"If-Match names version {request.if_match} but {request.key} is at version {current}", "If-Match"
        )


def _patch(request: JobRequest, existing: Existing | None, policies: ElementPolicies) -> PlannedChange:
    live = _live(request, existing)
    assert live.resource is not None
    parsed = request.parsed or parse_patch(request.body, request.content_type, strict=request.strict)
    outcome = parsed.apply_to(live.resource, policies)
    if same_json(outcome.resource, live.resource):  # as HAPI, Microsoft's and IBM's servers: no new version
        unchanged = Issue(
            "informational",
            f"{CHANGED_NOTHING}: {request.key} stays at version {live.version_id}",
            (request.resource_type,),
            severity="information",
        )
        return PlannedChange(
            200, live.resource, operation_outcome([unchanged, *_issues(outcome.warnings)]), write=False
        )
    return PlannedChange(200, outcome.resource, outcome.warnings)


def _issues(outcome: dict[str, Any] | None) -> list[Issue]:
    return [
        Issue(i["code"], i["diagnostics"], tuple(i.get("expression", ())), i["severity"])
        for i in (outcome or {}).get("issue", [])
    ]


def _body(request: JobRequest) -> dict[str, Any]:
    resource = loads(request.body, what=f"{request.resource_type} resource")
    if not isinstance(resource, dict) or resource.get("resourceType") != request.resource_type:
        raise MalformedPatch(f"The body is not a {request.resource_type} resource", request.resource_type)
    return {**resource, "id": request.resource_id}


def _create(request: JobRequest, existing: Existing | None, policies: ElementPolicies) -> PlannedChange:
    if existing is not None and not existing.deleted:
        raise ResourceExists(f"{request.key} already exists", request.resource_type)
    return PlannedChange(201, _body(request), request.warnings)


def _update(request: JobRequest, existing: Existing | None, policies: ElementPolicies) -> PlannedChange:
    _check_if_match(request, existing)
    resource = _body(request)
    if existing is None or existing.resource is None:
        return PlannedChange(201, resource, request.warnings)
    return PlannedChange(200, carry_forward_meta(existing.resource, resource, request.snapshot_mode), request.warnings)


def _delete(request: JobRequest, existing: Existing | None, policies: ElementPolicies) -> PlannedChange:
    if existing is None:
        raise ResourceNotFound(f"{request.key} does not exist", request.resource_type)
    _check_if_match(request, existing)
    if existing.deleted:
        return PlannedChange(200, None, _informational(f"{request.key} was already deleted"), write=False)
    return PlannedChange(200, None, _informational(f"{request.key} deleted"))


HANDLERS: Mapping[Action, Handler] = {
    Action.PATCH: _patch,
    Action.CREATE: _create,
    Action.UPDATE: _update,
    Action.DELETE: _delete,
}


def plan_change(
    request: JobRequest,
    existing: Existing | None,
    policies: ElementPolicies,
    client_policies: ClientPolicies | None = None,
) -> PlannedChange:
    """The change `request` makes to `existing`; FhirError when it cannot be made (Forbidden when its
    actor may not make it: a PUT that creates without `c`, or a change beyond the client's element policy)."""
    planned = HANDLERS[request.action](request, existing, policies)
    if request.actor is not None:
        _police(request, existing, planned, (client_policies or {}).get(request.actor.client_id))
    return planned


def _police(
    request: JobRequest, existing: Existing | None, planned: PlannedChange, policy: ElementPolicies | None
) -> None:
    assert request.actor is not None
    live = existing is not None and existing.resource is not None
    if request.action == Action.UPDATE:
        request.actor.may(UPDATE if live else CREATE, request.resource_type)
    if (
        policy
        and live
        and planned.write
        and planned.resource is not None
        and request.action in (Action.PATCH, Action.UPDATE)
    ):
        assert existing is not None and existing.resource is not None
        issues = policy_violations(existing.resource, planned.resource, policy)
        if issues:
            raise forbidden_issues(issues)


def _informational(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": text}],
    }


_CARRIED = {"TAG": "tag", "SECURITY_LABEL": "security"}


def carry_forward_meta(old: dict[str, Any], new: dict[str, Any], snapshot_mode: tuple[str, ...]) -> dict[str, Any]:
    """FHIR update rules as Smile CDR documents them: tags and security labels carry forward
    unless `X-Meta-Snapshot-Mode` names them; profiles are always the new ones."""
    old_meta = old.get("meta") if isinstance(old.get("meta"), dict) else {}
    new_meta = dict(new["meta"]) if isinstance(new.get("meta"), dict) else {}
    for mode, element in _CARRIED.items():
        if mode in snapshot_mode:
            continue
        kept = [c for c in (old_meta or {}).get(element, []) if isinstance(c, dict)]
        given = list(new_meta.get(element, []))
        seen = {(c.get("system"), c.get("code")) for c in given if isinstance(c, dict)}
        merged = given + [c for c in kept if (c.get("system"), c.get("code")) not in seen]
        if merged:
            new_meta[element] = merged
    result = dict(new)
    if new_meta:
        result["meta"] = new_meta
    return result


def stamped(resource: dict[str, Any], resource_id: str, version_id: int, when: datetime) -> dict[str, Any]:
    """A copy with id and server-owned meta set; `resourceType`, `id`, `meta` lead, as servers write them."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    head = {
        "resourceType": resource["resourceType"],
        "id": resource_id,
        "meta": {"versionId": str(version_id), "lastUpdated": fhir_instant(when), **meta},
    }
    return {**head, **{k: v for k, v in resource.items() if k not in head}}


def fhir_instant(when: datetime) -> str:
    """FHIR `instant` in UTC with milliseconds, as MongoDB keeps them."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"  # strftime: 5x slower


def identifiers(resource: dict[str, Any] | None) -> set[tuple[str, str]]:
    """(system, value) of each Resource.identifier (system '' when absent)."""
    found = set()
    for identifier in (resource or {}).get("identifier") or []:
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            found.add((str(identifier.get("system") or ""), identifier["value"]))
    return found
