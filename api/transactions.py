"""Transaction Bundles: every entry checked at intake, then one job queued on all its resources at once.

A bad entry refuses the whole transaction with that entry's status and an
OperationOutcome naming it (`Bundle.entry[7]`); the same resource twice is
400. References to an entry's `urn:uuid:` fullUrl become its `Type/id`
(api/references.py). The worker applies the entries all or none
(worker/service/transaction.py); the answer is a `transaction-response` Bundle, GET entries read after the writes.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import Response

from api.answers import accepted_answer
from api.dependencies import Connections
from api.deps import acting, connections, fhir_base
from api.dry_runs import DRY_RUN, dry_entry
from api.entries import authorize_entry, entry_request, is_read
from api.http import fhir_response, outcome_response, parse_prefer
from api.references import full_urls, rewritten
from worker.errors import InvalidRequest
from worker.model.access import Principal
from worker.model.clock import utc_now
from worker.model.jobs import Action, Job, JobRequest, JobResult, JobState
from worker.model.results import response_element, version_wanted, written_entry
from worker.model.transactions import TransactionEntry, encode_entries, transaction_keys
from worker.model.versions import StoredVersion


def _checked(
    conn: Connections, entries: list[Any], caller: Principal, http: Request
) -> tuple[list[TransactionEntry], dict[str, str]]:
    """Every entry authorized first (one out of scope refuses the whole transaction, 403, before anything is
    resolved or written), then checked."""
    for index, entry in enumerate(entries):
        authorize_entry(entry, caller, f"Bundle.entry[{index}]")
    names, created = full_urls(entries)
    checked: list[TransactionEntry] = []
    reads: dict[str, str] = {}
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        if is_read(entry):
            reads[str(index)] = str(entry["request"].get("url"))
            continue
        lenient = conn.settings.store_validation == "lenient"
        resolved = conn.groups.resolved(rewritten(entry, names, where), where)
        request = acting(http, caller, entry_request(resolved, where, lenient, created.get(index)))
        if request.key in first_index:
            raise InvalidRequest(
                f"{where}: {request.key} is already changed by Bundle.entry[{first_index[request.key]}]; "
                "a transaction may change each resource once",
                where,
            )
        first_index[request.key] = index
        checked.append(TransactionEntry(index, request))
    return checked, reads


async def transaction(request: Request, entries: list[Any], caller: Principal, dry: bool = False) -> Response:
    """Check every entry, then queue the transaction as one job and (unless asked to answer at once) wait for it;
    `dry`: plan it on the stored state and answer, recording nothing (api/dry_runs.py)."""
    conn = connections(request)
    checked, reads = await anyio.to_thread.run_sync(_checked, conn, entries, caller, request)
    if not checked and not dry:  # nothing to write: no job, no queue; the reads are answered now
        return await anyio.to_thread.run_sync(_reads_only, conn, reads, len(entries), fhir_base(request))
    job_id = Job.new_id()
    job_request = acting(request, caller, JobRequest(Action.TRANSACTION, "Bundle", job_id, encode_entries(checked)))
    job = Job(job_id, job_request, JobState.ACCEPTED, utc_now(), extra={"reads": reads, "size": len(entries)})
    if dry:
        return await anyio.to_thread.run_sync(_dry_transaction, conn, job, checked, fhir_base(request))
    keys = transaction_keys(checked, job.tenant)
    wait = "respond-async" not in parse_prefer(request.headers.get("prefer"))
    async with conn.waiter.expect([job.id] if wait else []) as expected:
        await anyio.to_thread.run_sync(conn.submitter.submit_transaction, job, keys)
        if wait:
            await expected.wait(job.id, conn.settings.sync_wait_seconds)
    if wait:  # the waiting API reads the whole result from MongoDB: the wake-up carries the status alone
        done = await anyio.to_thread.run_sync(conn.database.jobs.get, job.id)
        if done is not None and done.state.final:
            return await anyio.to_thread.run_sync(transaction_answer, conn, done, fhir_base(request))
    return accepted_answer(job, fhir_base(request))


def _dry_transaction(conn: Connections, job: Job, checked: list[TransactionEntry], base: str) -> Response:
    """The transaction planned in a dry-run session: its failing entry's answer, or the transaction-response it
    would give, each written entry marked with what it was planned on; reads come after the writes."""
    session = conn.dry_run.session()
    planned = session.transaction(job, checked)
    result = planned.result
    if not result.succeeded:
        return outcome_response(result.status, result.outcome or {}, {DRY_RUN: "true"})
    texts = {version.key: version.text for version in planned.versions}
    by_index = {int(r["index"]): r for r in result.entries or []}
    reads = {int(k): v for k, v in (job.extra.get("reads") or {}).items()}
    entries = []
    for index in range(int(job.extra["size"])):
        if index in reads:
            entries.append(conn.groups.read_entry(reads[index], base, session.newest))
            continue
        written = by_index[index]
        key = str(written["key"])
        outcome = JobResult(int(written["status"]), written.get("versionId"), written.get("lastUpdated"))
        before = planned.before[key]
        text = texts.get(key, before.text if before is not None else None)
        entries.append(dry_entry(key, outcome, text, before, planned.queued_ahead[key], base))
    bundle = {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
    return fhir_response(bundle, 200, {DRY_RUN: "true"})


def _reads_only(conn: Connections, reads: dict[str, str], size: int, base: str) -> Response:
    entries = [conn.groups.read_entry(reads[str(index)], base) for index in range(size)]
    return fhir_response({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


def transaction_answer(conn: Connections, job: Job, base: str) -> Response:
    """Failed: that entry's status and OperationOutcome. Applied: the transaction-response Bundle, in entry order."""
    result = job.result
    assert result is not None
    if not result.succeeded:
        return outcome_response(result.status, result.outcome or {})
    by_index = {int(r["index"]): r for r in result.entries or []}
    reads = {int(k): v for k, v in (job.extra.get("reads") or {}).items()}
    written = [r for r in by_index.values() if r.get("versionId")]
    wanted = [version_wanted(str(r["key"]), int(r["versionId"])) for r in written]
    versions = dict(zip((int(r["index"]) for r in written), conn.database.resources.versions(wanted)))
    bundle_entries = []
    for index in range(int(job.extra.get("size", len(by_index) + len(reads)))):
        if index in reads:
            bundle_entries.append(conn.groups.read_entry(reads[index], base))
        elif index in by_index:
            bundle_entries.append(_written(by_index[index], versions.get(index), base))
    return fhir_response(
        {"resourceType": "Bundle", "id": job.id, "type": "transaction-response", "entry": bundle_entries}
    )


def _written(entry: dict[str, Any], version: StoredVersion | None, base: str) -> dict[str, Any]:
    result = JobResult(
        int(entry["status"]), entry.get("versionId"), version.last_updated if version is not None else None
    )
    return written_entry(str(entry["key"]), version, response_element(result, str(entry["key"]), base), base)
