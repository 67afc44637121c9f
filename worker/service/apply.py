"""Apply jobs to a resource: plan each change (pure), commit the new versions, decide what a redelivery means.

A single job (`run_job`) is started at its gate (JobStore.start: an insert, so
one worker wins): a FIRST start plans and commits version n+1 with a
compare-and-set on n; an AGAIN start (a redelivery after a crash) first looks
for the version the job may have written already and takes that as its
result; a CANCELLED start is left. Several fresh jobs of one key
(`run_batch`) are planned in memory in order and committed together. The
outcomes are recorded by outcomes.py; nothing here publishes or counts.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from worker.errors import FhirError
from worker.model.changes import Existing, plan_change
from worker.model.jobs import Job, JobResult, JobState, Start
from worker.model.stores import Stores
from worker.model.versions import StoredVersion, planned_version
from worker.service.budget import OverBudget, time_budget
from worker.service.commit import Commit
from worker.settings import Settings

log = logging.getLogger("fhir_patch.apply")


@dataclass(frozen=True)
class Applied:
    """A job brought to its result, to be recorded: `text` is the stored version it answers with (None for errors
    and deletions)."""

    job: Job
    result: JobResult
    text: str | None


@dataclass(frozen=True)
class LeaseLost:
    """Another writer committed first and it was not this job: its lease is gone, the drain stops."""

    key: str


@dataclass(frozen=True)
class Plan:
    result: JobResult
    version: StoredVersion | None  # None: nothing to write
    text: str | None


class Applier:
    def __init__(self, settings: Settings, database: Stores, commit: Commit, clock: Callable[[], datetime]):
        self._settings = settings
        self._db = database
        self.commit = commit
        self._clock = clock

    def run_job(self, job: Job, cached_newest: str | None = None) -> Applied | Job | LeaseLost:
        """Bring one job to its result (Applied), or find it ended or cancelled (the Job, nothing to record)."""
        started = self._db.jobs.start(job.id, self._clock())
        if started is Start.CANCELLED:
            self._db.jobs.cancelled_left([job.id], self._clock())
            return replace(job, state=JobState.CANCELLED, finished_at=self._clock())
        if started is Start.AGAIN:  # a redelivery: it may have ended, or written its version, already
            job = self._db.jobs.get(job.id) or job
            if job.state.final:
                return job
            earlier = self.written_by(job)
            if earlier is not None:
                return self.earlier_result(job, earlier)
        current = StoredVersion.from_cache(cached_newest) if cached_newest else self.newest(job)
        return self._apply(job, current)

    def run_batch(self, jobs: list[Job], cached_newest: str | None) -> list[Applied]:
        """Jobs never started before, applied in order in memory, then committed together. A collision (another
        writer) keeps only what was committed before it; the rest goes one by one through run_job. Empty when
        the first job is not a fresh start (a redelivery or a cancel: run_job handles those)."""
        now = self._clock()
        starts = self._db.jobs.start_many([job.id for job in jobs], now)
        fresh = [job for job, start in itertools.takewhile(lambda pair: pair[1] is Start.FIRST, zip(jobs, starts))]
        if not fresh:
            return []
        current = StoredVersion.from_cache(cached_newest) if cached_newest else self.newest(fresh[0])
        before, plans = current, []
        for job in fresh:
            plan = self.plan(job, current, now)
            current = plan.version or current
            plans.append((job, plan))
        versions = [plan.version for _, plan in plans if plan.version is not None]
        committed = self.commit.in_order(list(zip([before, *versions], versions)))
        if committed < len(versions):  # keep the jobs before the first version not written
            plans = plans[: next(i for i, (_, plan) in enumerate(plans) if plan.version is versions[committed])]
        return [Applied(job, plan.result, plan.text) for job, plan in plans]

    def run_singles(self, jobs: list[tuple[Job, str | None]]) -> list[Applied | Job | LeaseLost]:
        """One job each of different keys (with the copy of its key's newest version), brought to their results
        together: one gate insert, one index update, one insert of every new version and one Redis round trip for
        the copies. A job not started fresh here (a redelivery, a cancel) goes through run_job alone."""
        now = self._clock()
        starts = self._db.jobs.start_many([job.id for job, _ in jobs], now)
        plans: dict[int, tuple[StoredVersion | None, Plan]] = {}
        for index, ((job, cached), start) in enumerate(zip(jobs, starts)):
            if start is Start.FIRST:
                current = StoredVersion.from_cache(cached) if cached else self.newest(job)
                plans[index] = (current, self.plan(job, current, now))
        writes = {i: (current, plan.version) for i, (current, plan) in plans.items() if plan.version is not None}
        order = list(writes)
        taken = {order[n] for n in self.commit.each(list(writes.values()))}
        results: list[Applied | Job | LeaseLost] = []
        for index, (job, cached) in enumerate(jobs):
            if index not in plans:
                results.append(self.run_job(job, cached))
            elif index in taken:
                results.append(self._collided(job))
            else:
                results.append(Applied(job, plans[index][1].result, plans[index][1].text))
        return results

    def plan(self, job: Job, current: StoredVersion | None, now: datetime) -> Plan:
        """What the job does to `current`: its result, and the new version to commit. A job that fails, runs past
        its time budget or meets a bug gets its own failed result; it never stops its key."""
        existing = Existing(current.version_id, None if current.deleted else current.resource()) if current else None
        limit = self._settings.job_time_limit_seconds
        try:
            with time_budget(limit):
                planned = plan_change(
                    job.request, existing, self._settings.element_policies, self._settings.client_element_policies
                )
        except FhirError as exc:
            return Plan(JobResult(exc.status, outcome=exc.outcome), None, None)
        except OverBudget:
            log.warning("job over its time budget", extra={"job_id": job.id, "key": job.key})
            return Plan(JobResult.error(422, "too-costly", _over_budget(limit)), None, None)
        except Exception:  # a bug must fail this job alone, never the key's queue
            log.exception("job failed unexpectedly", extra={"job_id": job.id, "key": job.key})
            failed = "The server failed while applying this job; it was not applied"
            return Plan(JobResult.error(500, "exception", failed), None, None)
        if not planned.write:
            assert current is not None
            return Plan(
                JobResult(planned.status, current.version_id, current.last_updated, planned.outcome), None, current.text
            )
        version_id = current.version_id + 1 if current else 1
        new = planned_version(job.id, job.request, planned.resource, version_id, now)
        return Plan(JobResult(planned.status, version_id, now, planned.outcome), new, new.text)

    def newest(self, job: Job) -> StoredVersion | None:
        return self._db.resources.newest(job.request.resource_type, job.request.resource_id)

    def written_by(self, job: Job) -> StoredVersion | None:
        """The version `job` wrote, if it wrote one (it is among the newest versions of its resource)."""
        return self._db.resources.written_by(job.id, job.request.resource_type, job.request.resource_id)

    def earlier_result(self, job: Job, version: StoredVersion) -> Applied:
        log.info(
            "job had already written its version; recording that",
            extra={"job_id": job.id, "key": job.key, "version": version.version_id},
        )
        status = 201 if version.version_id == 1 else 200
        return Applied(job, JobResult(status, version.version_id, version.last_updated), version.text)

    def _apply(self, job: Job, current: StoredVersion | None) -> Applied | LeaseLost:
        plan = self.plan(job, current, self._clock())
        new = plan.version
        if new is None:
            return Applied(job, plan.result, plan.text)
        collided = self.commit.one((current, new))
        return Applied(job, plan.result, plan.text) if collided is None else self._collided(job, collided.latest)

    def _collided(self, job: Job, latest: StoredVersion | None = None) -> Applied | LeaseLost:
        """The job's version number was taken: by its own earlier attempt (paused, then resumed; that version is
        its result), or by another writer (the lease is lost)."""
        latest = latest or self._db.resources.latest(job.request.resource_type, job.request.resource_id)
        if latest is not None:
            self.commit.copy([latest])
        earlier = latest if latest is not None and latest.job_id == job.id else self.written_by(job)
        if earlier is not None:
            return self.earlier_result(job, earlier)
        return LeaseLost(job.key)


def _over_budget(limit: float) -> str:
    return (
        f"Applying this job took longer than {limit:g}s (FHIR_PATCH_JOB_TIME_LIMIT_SECONDS); it was stopped and not "
        "applied"
    )
