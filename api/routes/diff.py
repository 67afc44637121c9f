"""`$diff`: the patch between two versions of a resource, or between two resources (HAPI's operation, and more).

- `GET /fhir/{type}/{id}/$diff[?fromVersion=n]`: from the previous (or the n-th) version to the newest;
- `GET /fhir/$diff?from=Type/a[/_history/n]&to=Type/b[/_history/m]`: any two stored versions of one type;
- `POST /fhir/$diff` with a `Parameters` holding `from` and `to` resources: two resources not stored.

The answer is a FHIRPath Patch `Parameters`, or with `Accept: application/json-patch+json` RFC 6902
operations; `meta` is left out of the comparison unless `includeMeta=true`. Applying the answer to `from`
gives `to` (worker/patch/diff.py). Reading is all it needs: the `r` scope on the type.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth import Caller
from api.deps import connections, resource_type_named
from api.diff_answers import diff_response, diff_wanted
from api.http import read_body
from worker.errors import InvalidRequest, ResourceGone, ResourceNotFound
from worker.model.access import READ
from worker.model.stores import Stores
from worker.model.versions import StoredVersion
from worker.patch.fhir_json import loads
from worker.patch.structure import is_resource_type

router = APIRouter(prefix="/fhir")
_REFERENCE = re.compile(r"(?P<type>[A-Za-z]{1,64})/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[0-9]{1,9}))?")


@router.get("/$diff")
async def diff_stored(request: Request, caller: Caller) -> Response:
    """Between any two stored versions (each the newest unless it names `/_history/n`) of one resource type."""
    wanted = diff_wanted(request)
    old, new = _reference(request, "from"), _reference(request, "to")
    if old[0] != new[0]:
        raise InvalidRequest(f"from is a {old[0]} and to is a {new[0]}: a diff compares one resource type", "to")
    caller.require(old[0], READ)
    db = connections(request).database
    first = await anyio.to_thread.run_sync(_stored, db, *old, "from")
    second = await anyio.to_thread.run_sync(_stored, db, *new, "to")
    return diff_response(wanted, first.resource(), second.resource())


@router.post("/$diff")
async def diff_posted(request: Request, caller: Caller) -> Response:
    """Between two resources sent in a `Parameters` (`from`, `to`), not stored."""
    wanted = diff_wanted(request)
    body = await read_body(request, connections(request).settings.max_body_bytes)
    old, new = await anyio.to_thread.run_sync(_posted_pair, body)
    caller.require(old["resourceType"], READ)
    return diff_response(wanted, old, new)


@router.get("/{resource_type}/{resource_id}/$diff")
async def diff_instance(resource_type: str, resource_id: str, request: Request, caller: Caller) -> Response:
    """From the previous version (or `fromVersion`) to the newest. A resource with one version is diffed from an
    empty resource of its type and id, so the answer adds everything it holds."""
    caller.require(resource_type_named(resource_type), READ)
    wanted = diff_wanted(request)
    db = connections(request).database
    newest = await anyio.to_thread.run_sync(_stored, db, resource_type, resource_id, None, "id")
    base = newest.version_id - 1
    if "fromVersion" in request.query_params:
        raw = request.query_params["fromVersion"]
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= newest.version_id):
            raise InvalidRequest(
                f"fromVersion must be a version of {newest.key}, from 1 to {newest.version_id}", "fromVersion"
            )
        base = int(raw)
    if base == 0:
        return diff_response(wanted, {"resourceType": resource_type, "id": resource_id}, newest.resource())
    old = await anyio.to_thread.run_sync(_stored, db, resource_type, resource_id, base, "fromVersion")
    return diff_response(wanted, old.resource(), newest.resource())


def _reference(request: Request, name: str) -> tuple[str, str, int | None]:
    raw = request.query_params.get(name)
    found = _REFERENCE.fullmatch(raw or "")
    if found is None:
        raise InvalidRequest(f"{name} must be Type/id or Type/id/_history/n, not {raw!r}", name)
    if not is_resource_type(found["type"]):
        raise InvalidRequest(f"{name} names {found['type']!r}, which is not a FHIR R4 resource type", name)
    version = found["version"]
    return found["type"], found["id"], int(version) if version else None


def _stored(db: Stores, resource_type: str, resource_id: str, version_id: int | None, where: str) -> StoredVersion:
    """A stored version (the newest when `version_id` is None); 404 when there is none, 410 for a deletion."""
    key = f"{resource_type}/{resource_id}"
    if version_id is None:
        found = db.resources.newest(resource_type, resource_id)
    else:
        found = db.resources.version(resource_type, resource_id, version_id)
    if found is None:
        missing = "does not exist" if version_id is None else f"has no version {version_id}"
        raise ResourceNotFound(f"{key} {missing}", where)
    if found.deleted:
        raise ResourceGone(f"{key} version {found.version_id} is a deletion: there is no resource to compare", where)
    return found


def _posted_pair(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    document = loads(body, what="Parameters")
    if not isinstance(document, dict) or document.get("resourceType") != "Parameters":
        raise InvalidRequest("POST $diff takes a Parameters with a 'from' and a 'to' resource", "Parameters")
    parameters = document.get("parameter")
    listed = parameters if isinstance(parameters, list) else []
    pair = [_posted_resource(listed, name) for name in ("from", "to")]
    if pair[0]["resourceType"] != pair[1]["resourceType"]:
        raise InvalidRequest(
            f"from is a {pair[0]['resourceType']} and to is a {pair[1]['resourceType']}: a diff compares one "
            "resource type",
            "Parameters.parameter[to]",
        )
    return pair[0], pair[1]


def _posted_resource(parameters: list[Any], name: str) -> dict[str, Any]:
    where = f"Parameters.parameter[{name}]"
    found = [p for p in parameters if isinstance(p, dict) and p.get("name") == name]
    if len(found) != 1:
        raise InvalidRequest(f"POST $diff needs exactly one parameter {name!r}, found {len(found)}", where)
    resource = found[0].get("resource")
    if not isinstance(resource, dict) or not is_resource_type(str(resource.get("resourceType"))):
        raise InvalidRequest(f"parameter {name!r} must hold a FHIR R4 resource in its 'resource'", f"{where}.resource")
    return resource
