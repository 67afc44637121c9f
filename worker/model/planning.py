"""What a job would do to its resource's current version, as a result and a new version: pure, no I/O.

The worker plans every job here before it commits (worker/service/apply.py and transaction.py), and a dry run
plans here and commits nothing (worker/submission/dry_run.py), so the two answer the same for the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.errors import FhirError
from worker.model.changes import ClientPolicies, Existing, plan_change
from worker.model.jobs import Job, JobResult
from worker.model.transactions import EntryFailed, TransactionEntry, plan_transaction
from worker.model.versions import StoredVersion, planned_version
from worker.patch.policy import ElementPolicies

UNEXPECTED = "The server failed while applying this job; it was not applied"


@dataclass(frozen=True)
class Policies:
    """The element policies a change is checked against: for everyone, and per client."""

    elements: ElementPolicies
    clients: ClientPolicies


@dataclass(frozen=True)
class Plan:
    """A job's result, and the new version to commit (None: nothing to write) with the text it answers with."""

    result: JobResult
    version: StoredVersion | None
    text: str | None


def existing(current: StoredVersion | None) -> Existing | None:
    """A stored version as a change handler sees it."""
    if current is None:
        return None
    return Existing(current.version_id, None if current.deleted else current.resource())


def plan_job(job: Job, current: StoredVersion | None, now: datetime, policies: Policies) -> Plan:
    """What `job` does to `current` (its resource's newest version, None if it never existed). A refused change
    is a failed result of its own, never an exception."""
    try:
        planned = plan_change(job.request, existing(current), policies.elements, policies.clients)
    except FhirError as exc:
        return Plan(JobResult(exc.status, outcome=exc.outcome), None, None)
    if not planned.write:
        assert current is not None
        return Plan(
            JobResult(planned.status, current.version_id, current.last_updated, planned.outcome), None, current.text
        )
    version_id = current.version_id + 1 if current else 1
    new = planned_version(job.id, job.request, planned.resource, version_id, now)
    return Plan(JobResult(planned.status, version_id, now, planned.outcome), new, new.text)


def plan_transaction_job(
    job: Job,
    entries: list[TransactionEntry],
    current: dict[str, StoredVersion | None],
    now: datetime,
    policies: Policies,
) -> tuple[JobResult, list[StoredVersion]]:
    """A transaction's result (one result per entry, in entry order; or the first failing entry's error) and the
    versions it writes, each marked with the transaction's id."""
    try:
        planned = plan_transaction(
            entries, {k: existing(v) for k, v in current.items()}, policies.elements, policies.clients
        )
    except EntryFailed as failed:
        return JobResult(failed.status, outcome=failed.outcome), []
    versions: list[StoredVersion] = []
    results: list[dict[str, Any]] = []
    for entry, change in planned:
        request, old = entry.request, current[entry.request.key]
        result: dict[str, Any] = {"index": entry.index, "key": request.key, "status": change.status}
        if not change.write:
            results.append({**result, "versionId": old.version_id if old else None})
            continue
        version_id = (old.version_id if old else 0) + 1
        versions.append(planned_version(job.id, request, change.resource, version_id, now, transaction=job.id))
        results.append({**result, "versionId": version_id, "lastUpdated": now})
    return JobResult(200, entries=sorted(results, key=lambda r: int(r["index"]))), versions
