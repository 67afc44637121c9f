"""`POST /fhir` with a `batch` Bundle: each entry its own job on its resource's queue; one answer entry per request.

GET entries are answered when the answer is built, after the writes (FHIR
processes reads last). Synchronous by default (wait for every entry, then a
`batch-response`); `Prefer: respond-async` answers 202 and the Bundle comes
from polling `/_async/{group}`.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth import Caller
from api.dependencies import Connections
from api.deps import connections, fhir_base
from api.dry_runs import DRY_RUN, dry_entry, dry_run_asked
from api.entries import entry_type, is_read
from api.group_answers import group_id_for, group_status, status_answer
from api.groups import entry_response
from api.http import fhir_response, parse_prefer, read_body
from api.tenancy import tenant_of
from api.traces import trace
from api.transactions import transaction
from worker.errors import AccessError, InvalidRequest, Unavailable
from worker.model.access import READ, Principal
from worker.model.clock import utc_now
from worker.model.groups import entry_job_id
from worker.patch.fhir_json import loads

router = APIRouter(prefix="/fhir")


@router.post("")
@router.post("/")
async def bundle(request: Request, caller: Caller) -> Response:
    conn = connections(request)
    dry = dry_run_asked(request)
    body = await read_body(request, conn.settings.max_body_bytes)
    document = await anyio.to_thread.run_sync(lambda: loads(body, what="Bundle"))  # off the event loop
    kind, entries = _checked_bundle(document)
    if kind == "transaction":
        return await transaction(request, entries, caller, dry)
    if dry:
        return await _dry_batch(request, caller, entries)
    return await _batch(request, caller, entries)


def _checked_bundle(document: Any) -> tuple[str, list[Any]]:
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        raise InvalidRequest("POST [base] takes a Bundle of type batch or transaction", "Bundle")
    kind = document.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidRequest(f"Bundle.type must be batch or transaction, not {kind!r}", "Bundle.type")
    entries = document.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidRequest("Bundle.entry must be a list", "Bundle.entry")
    return str(kind), entries


async def _batch(request: Request, caller: Caller, entries: list[Any]) -> Response:
    conn = connections(request)
    # A GET entry the caller may not read goes with the writes, where it fails alone with 403.
    reads = {n: str(e["request"].get("url")) for n, e in enumerate(entries, 1) if is_read(e) and _readable(caller, e)}
    writes = [(n, e) for n, e in enumerate(entries, 1) if n not in reads]
    group_id = group_id_for(request.headers.get("idempotency-key"), caller.subject, tenant_of(request))
    fresh = await anyio.to_thread.run_sync(
        lambda: conn.database.groups.open(group_id, "batch", utc_now(), reads, caller.subject)
    )
    # A resubmission whose first intake never ended (its API died mid-intake: the group is not closed) takes the
    # entries again: none is recorded twice, and those recorded but never queued are queued now, in entry order
    # (worker/submission/submitter.py), so no acknowledged entry waits for the reconciler behind later jobs.
    intake = fresh or await anyio.to_thread.run_sync(_intake_unfinished, conn, group_id, caller)
    wait = intake and "respond-async" not in parse_prefer(request.headers.get("prefer"))
    # Every entry is expected before any is queued (a fast worker must not finish one unseen); entries refused at
    # intake never run, and leaving the block forgets them.
    async with conn.waiter.expect([entry_job_id(group_id, n) for n, _ in writes] if wait else []) as expected:
        queued = await _accept(request, caller, group_id, writes) if intake else []
        if intake:  # a second close collides with a first one, which stands
            await anyio.to_thread.run_sync(
                conn.database.groups.close, group_id, len(entries), len(writes) - len(queued), utc_now()
            )
        if not wait or not queued:
            return await status_answer(request, group_id, caller)
        ended = await expected.wait_all(queued, conn.settings.sync_wait_seconds)
    if all(message is not None for message in ended):
        # Every entry's result is committed before its wake-up is published; the group's counters in Redis are
        # moved a moment later (where the job leaves its queue), so they are not what decides "finished" here.
        group = await anyio.to_thread.run_sync(conn.database.groups.get, group_id)
        assert group is not None
        return fhir_response(await anyio.to_thread.run_sync(conn.groups.batch_response, group, fhir_base(request)), 200)
    answer = await group_status(request, group_id, caller)  # the wait truly ran out: 202 with the progress
    assert answer is not None
    return answer


async def _dry_batch(request: Request, caller: Caller, entries: list[Any]) -> Response:
    """A batch's dry run: each write entry checked as intake checks it and planned in entry order (entries on one
    resource build on each other), the reads answered after the writes from what they would leave."""
    conn, base, rid = connections(request), fhir_base(request), trace(request)
    reads = {n: str(e["request"].get("url")) for n, e in enumerate(entries, 1) if is_read(e) and _readable(caller, e)}
    writes = [(n, e) for n, e in enumerate(entries, 1) if n not in reads]

    def planned() -> dict[str, Any]:
        session = conn.dry_run.session()
        ends, refused = conn.groups.plan_entries(session, writes, lambda n: f"Bundle.entry[{n - 1}]", caller, rid)
        answers = {n: {"response": entry_response(event, base)} for n, event in refused}
        for n, end in ends:
            assert end.job.result is not None
            answers[n] = dry_entry(end.job.key, end.job.result, end.text, end.before, end.queued_ahead, base)
        answers.update({n: conn.groups.read_entry(url, base, session.newest) for n, url in reads.items()})
        return {"resourceType": "Bundle", "type": "batch-response", "entry": [answers[n] for n in sorted(answers)]}

    return fhir_response(await anyio.to_thread.run_sync(planned), 200, {DRY_RUN: "true"})


async def _accept(request: Request, caller: Principal, group_id: str, writes: list[tuple[int, Any]]) -> list[str]:
    """Queue the batch's write entries; over the backpressure limits nothing is accepted and the same request may
    come again (the group is forgotten)."""
    conn = connections(request)
    try:
        taken = await anyio.to_thread.run_sync(
            conn.groups.accept_entries,
            group_id,
            writes,
            lambda n: f"Bundle.entry[{n - 1}]",
            caller,
            trace(request),
        )
    except (AccessError, Unavailable):  # refused (403) or over the backpressure limits (429/503)
        await anyio.to_thread.run_sync(conn.database.groups.discard, group_id)
        raise
    return taken.queued


def _intake_unfinished(conn: Connections, group_id: str, caller: Principal) -> bool:
    group = conn.database.groups.get(group_id)
    return group is not None and group.total is None and caller.owns(group.owner)


def _readable(caller: Principal, entry: Any) -> bool:
    return caller.grants.allows(entry_type(entry["request"]), READ)
