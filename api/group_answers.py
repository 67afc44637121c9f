"""A group's answers (a feed's or a batch's): its id from the Idempotency-Key, and its status while pending."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import Response

from api.deps import connections, fhir_base
from api.groups import Progress
from api.http import fhir_response
from api.tenancy import in_community
from worker.model.access import Principal
from worker.model.tenants import DEFAULT_TENANT


def group_id_for(idempotency_key: str | None, subject: str, tenant: str = DEFAULT_TENANT) -> str:
    """The same Idempotency-Key of the same subject names the same group, so a resubmitted feed is accepted line
    by line only once (another subject's key, or another community's, names another group)."""
    if idempotency_key:
        named = [subject, idempotency_key] if tenant == DEFAULT_TENANT else [tenant, subject, idempotency_key]
        return "g" + hashlib.sha256(json.dumps(named).encode()).hexdigest()[:23]
    return "g" + uuid.uuid4().hex[:23]


async def group_status(request: Request, group_id: str, caller: Principal) -> Response | None:
    """The polling answer for a group (None when no such group, or not the caller's): 202 with X-Progress while
    entries are pending."""
    return await _status(request, group_id, caller, accepted_answer=False)


async def status_answer(request: Request, group_id: str, caller: Principal) -> Response:
    """202 Accepted for a group just recorded, with its progress."""
    answer = await _status(request, group_id, caller, accepted_answer=True)
    assert answer is not None
    return answer


async def _status(request: Request, group_id: str, caller: Principal, accepted_answer: bool) -> Response | None:
    conn = connections(request)
    group = await anyio.to_thread.run_sync(conn.database.groups.get, group_id)
    if group is None or not caller.owns(group.owner):
        return None
    progress: Progress = await anyio.to_thread.run_sync(conn.groups.progress, group)
    base = fhir_base(request)
    location = f"{base}/_async/{group_id}"
    body = progress.to_parameters(f"{location}/results")
    if progress.done and group.kind == "batch" and not accepted_answer:  # a batch's answer is its Bundle, not counts
        return fhir_response(await anyio.to_thread.run_sync(conn.groups.batch_response, group, base), 200)
    if accepted_answer or not progress.done:
        total = group.total if group.total is not None else "?"
        return fhir_response(
            body,
            202,
            {"Content-Location": location, "X-Progress": f"{progress.ended}/{total} entries", "Retry-After": "1"},
        )
    return fhir_response(body, 200, {"Content-Location": location})


async def recent_groups(request: Request, caller: Principal) -> dict[str, Any]:
    """A searchset Bundle of the caller's newest groups (GroupStore.recent), each as its progress Parameters."""
    conn = connections(request)
    base = fhir_base(request)

    def read() -> list[dict[str, Any]]:
        found = (conn.database.groups.get(group_id) for group_id in conn.database.groups.recent(caller.subject))
        owned = [g for g in found if g is not None and caller.owns(g.owner)]
        return [
            {
                "fullUrl": in_community(request, f"{base}/_async/{g.id}"),
                "resource": conn.groups.progress(g).to_parameters(
                    in_community(request, f"{base}/_async/{g.id}/results")
                ),
            }
            for g in owned
        ]

    entries = await anyio.to_thread.run_sync(read)
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
