"""`GET /fhir/Provenance?target=...`: the audit record of one version, or of every version of a resource (paged).

Each Provenance lives in its version's document (worker/model/provenance.py), so a
page is a known list of `_id` lookups, newest version first: its cost does not
depend on how many resources or versions are stored.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth import Caller
from api.deps import connections, fhir_base, query_number
from api.http import check_id, fhir_response
from api.tenancy import in_community
from worker.errors import InvalidRequest
from worker.model.access import READ
from worker.model.versions import StoredVersion
from worker.patch.fhir_json import loads_checked_before
from worker.patch.structure import is_resource_type

router = APIRouter(prefix="/fhir")
_TARGET = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[0-9]{1,9}))?$")
DEFAULT_COUNT, MAX_COUNT = 100, 1000


def _target(request: Request) -> tuple[str, str, int | None]:
    given = request.query_params.getlist("target")
    unknown = sorted(set(request.query_params) - {"target", "_count", "_offset"})
    if unknown:
        raise InvalidRequest(
            f"Provenance search takes target, _count and _offset, not {', '.join(unknown)}", unknown[0]
        )
    if len(given) != 1:
        raise InvalidRequest(
            "Provenance search needs exactly one target=Type/id or target=Type/id/_history/n", "target"
        )
    base = fhir_base(request)
    found = _TARGET.fullmatch(given[0].removeprefix(base + "/"))
    if found is None or not is_resource_type(found["type"]):
        raise InvalidRequest(f"target {given[0]!r} must be Type/id or Type/id/_history/n", "target")
    return found["type"], check_id(found["id"]), int(found["version"]) if found["version"] else None


@router.get("/Provenance")
async def provenance_search(request: Request, caller: Caller) -> Response:
    caller.require("Provenance", READ)
    resource_type, resource_id, version_id = _target(request)
    count = query_number(request, "_count", DEFAULT_COUNT, 1, MAX_COUNT)
    offset = query_number(request, "_offset", 0, 0, 10**9)
    store = connections(request).database.resources
    if version_id is not None:
        one = await anyio.to_thread.run_sync(store.version, resource_type, resource_id, version_id)
        versions, total = [one] if one is not None else [], 1 if one is not None else 0
    else:  # the same page of versions a history search reads
        total, versions = await anyio.to_thread.run_sync(store.history, resource_type, resource_id, count, offset)
    base = fhir_base(request)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": in_community(request, str(request.url))}],
        "entry": [_entry(v, base) for v in versions if v.provenance],
    }
    if version_id is None and offset + count < total:
        query = urlencode({"target": f"{resource_type}/{resource_id}", "_count": count, "_offset": offset + count})
        bundle["link"].append({"relation": "next", "url": in_community(request, f"{base}/Provenance?{query}")})
    return fhir_response(bundle)


def _entry(version: StoredVersion, base: str) -> dict[str, Any]:
    assert version.provenance is not None
    resource = loads_checked_before(version.provenance)
    return {"fullUrl": f"{base}/Provenance/{resource['id']}", "resource": resource, "search": {"mode": "match"}}
