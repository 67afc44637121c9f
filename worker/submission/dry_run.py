"""Dry runs: what a write would answer, planned on the stored state as the worker plans it; nothing is written.

A dry run reads, and only reads: each resource's newest version (the Redis copy, else MongoDB, as a worker
reads it, without copying it) and how many jobs its queue holds now. Those jobs would apply first, and a dry
run cannot know what they will do: it says how many there were (`queued_ahead`) and which version it planned
on (`before`). It writes nothing: no version, Provenance, identifier index entry, job record, key queue,
count or callback.

A `DrySession` carries what the run has planned so far, so that the lines of a feed (or the entries of a
batch) on one resource build on each other in order, as they would when applied. It keeps each resource's
planned newest version compressed (about a fifth of its JSON), so a 100,000-line feed of distinct resources
holds tens of megabytes, not hundreds.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from worker.model.clock import utc_now
from worker.model.jobs import Job, JobResult
from worker.model.planning import UNEXPECTED, Plan, Policies, plan_job, plan_transaction_job
from worker.model.stores import Stores
from worker.model.tenants import DEFAULT_TENANT, queue_key
from worker.model.transactions import TransactionEntry
from worker.model.versions import StoredVersion
from worker.schedule import KeySchedule
from worker.settings import Settings

log = logging.getLogger("fhir_patch.dry_run")


@dataclass(frozen=True)
class DryEnd:
    """How a job would end: `job` finished with its result, the `text` of the version it would store (None for
    errors and deletions), the version it was planned on, and the jobs queued ahead of it that it could not see."""

    job: Job
    text: str | None
    before: StoredVersion | None
    queued_ahead: int


@dataclass(frozen=True)
class DryTransaction:
    """A transaction's would-be result, the versions it would write, and per resource what it was planned on."""

    result: JobResult
    versions: list[StoredVersion]
    before: dict[str, StoredVersion | None]
    queued_ahead: dict[str, int]


@dataclass
class DrySession:
    """One dry run (a request, or a whole feed): the planned state of the resources it has touched."""

    _db: Stores
    _schedule: KeySchedule
    _policies: Policies
    _clock: Callable[[], datetime]
    _tenant: str
    _planned: dict[str, bytes | None] = field(default_factory=dict)  # key -> compressed cache text; None: absent
    _ahead: dict[str, int] = field(default_factory=dict)

    def jobs(self, jobs: list[Job]) -> list[DryEnd]:
        """Each job planned in order, on what the jobs before it in this session left."""
        self._look_up([job.key for job in jobs])
        now = self._clock()
        ends = []
        for job in jobs:
            before = self._current(job.key)
            plan = self._plan(job, before, now)
            if plan.version is not None:
                self._keep(job.key, plan.version)
            ends.append(DryEnd(job.finished(plan.result, now), plan.text, before, self._ahead[job.key]))
        return ends

    def transaction(self, job: Job, entries: list[TransactionEntry]) -> DryTransaction:
        keys = sorted({entry.request.key for entry in entries})
        self._look_up(keys)
        current = {key: self._current(key) for key in keys}
        result, versions = plan_transaction_job(job, entries, current, self._clock(), self._policies)
        for version in versions if result.succeeded else []:
            self._keep(version.key, version)
        return DryTransaction(result, versions, current, {key: self._ahead[key] for key in keys})

    def newest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The newest version of a resource as this run left it (a batch's or transaction's reads come after its
        writes, as FHIR processes them)."""
        key = f"{resource_type}/{resource_id}"
        self._look_up([key])
        return self._current(key)

    def _plan(self, job: Job, before: StoredVersion | None, now: datetime) -> Plan:
        return planned_safely(job, before, now, self._policies, "dry run failed unexpectedly")

    def _look_up(self, keys: list[str]) -> None:
        """The stored newest version and queue depth of each key this session has not seen yet."""
        fresh = [key for key in dict.fromkeys(keys) if key not in self._ahead]
        if not fresh:
            return
        depths = self._schedule.depths([queue_key(self._tenant, key) for key in fresh])
        for key, depth, stored in zip(fresh, depths, self._db.resources.peek_newest(fresh)):
            self._ahead[key] = depth
            self._planned[key] = None if stored is None else zlib.compress(stored.to_cache().encode(), 1)

    def _current(self, key: str) -> StoredVersion | None:
        kept = self._planned[key]
        return None if kept is None else StoredVersion.from_cache(zlib.decompress(kept).decode())

    def _keep(self, key: str, version: StoredVersion) -> None:
        self._planned[key] = zlib.compress(version.to_cache().encode(), 1)


class DryRun:
    """Opens dry-run sessions on the stores and the key schedule (both only read)."""

    def __init__(
        self,
        settings: Settings,
        database: Stores,
        schedule: KeySchedule,
        clock: Callable[[], datetime] = utc_now,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """`database` is `tenant`'s registry."""
        self._db = database
        self._schedule = schedule
        self._policies = Policies(settings.element_policies, settings.client_element_policies)
        self._clock = clock
        self._tenant = tenant

    def session(self) -> DrySession:
        return DrySession(self._db, self._schedule, self._policies, self._clock, self._tenant)


def planned_safely(job: Job, before: StoredVersion | None, now: datetime, policies: Policies, failed: str) -> Plan:
    """`plan_job`, with a bug failing this job alone (a 500 of its own, logged as `failed`), as in the worker."""
    try:
        return plan_job(job, before, now, policies)
    except Exception:
        log.exception(failed, extra={"job_id": job.id, "key": job.key})
        return Plan(JobResult.error(500, "exception", UNEXPECTED), None, None)
