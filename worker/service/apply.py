"""Apply a batch of jobs: plan each change (pure), commit the new versions, say how each job ended.

A batch is either one key's jobs in queue order (`chained`: each applies to the version the one before made,
committed in order: a collision keeps what came before it) or single jobs of different keys (each its own
commit point, all in one insert). A single job is a batch of one. A transaction is the third kind of batch,
with its result as its commit point (worker/service/transaction.py, through the same Commit).

Every job is started at its gate first (JobStore.start_many: an insert each, so one worker wins):
- FIRST: planned against the newest version (the Redis copy, else MongoDB) and committed as n+1 with a
  compare-and-set on n. A create or a PUT of a key with no copy among single jobs is first planned on no resource
  and its version 1 inserted without reading MongoDB (a directory's first feed: nothing to read); the insert is
  the compare-and-set, so if the resource existed the job is planned again on what MongoDB holds;
- AGAIN (a redelivery after a crash): it may have ended, or written its version, already; that is its result;
- CANCELLED: left.
The ends are recorded by outcomes.py; nothing here publishes or counts.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from worker.model.jobs import Action, Job, JobResult, JobState, Start
from worker.model.planning import UNEXPECTED, Plan, Policies, plan_job
from worker.model.stores import Stores
from worker.model.versions import StoredVersion
from worker.ordering.commit import Commit
from worker.service.budget import OverBudget, time_budget
from worker.settings import Settings

log = logging.getLogger("fhir_patch.apply")

Queued = tuple[Job, str | None]  # a job, and the Redis copy of its key's newest version (None: read MongoDB)

# Actions whose plan on no resource is worth trying before any read: a create, a PUT (one with If-Match, or one
# its actor may not create with, writes nothing on no resource, so it is read and planned again as before).
PRESUMED_NEW = frozenset({Action.CREATE, Action.UPDATE})


@dataclass(frozen=True)
class JobEnd:
    """How one job of a batch ended. `result` set: brought to its result now, to be recorded, answering with the
    stored version `text` (None for errors and deletions). `result` None: it had ended before, or was cancelled
    (`job` says how); nothing to record. `lease_lost`: another writer committed first; the key's drain stops."""

    job: Job
    result: JobResult | None = None
    text: str | None = None
    lease_lost: bool = False


class Applier:
    def __init__(self, settings: Settings, database: Stores, commit: Commit, clock: Callable[[], datetime]):
        self._settings = settings
        self._db = database
        self.commit = commit
        self._clock = clock
        self._policies = Policies(settings.element_policies, settings.client_element_policies)

    def apply(self, batch: list[Queued], chained: bool) -> list[JobEnd]:
        """Bring a batch to its ends. Chained (one key's jobs in order): the jobs up to the first that is not a
        fresh start, or that first one alone; the ends are a prefix of the batch (the rest stays queued). Not
        chained (one job per key): an end for every job, in order."""
        now = self._clock()
        starts = self._db.jobs.start_many([job.id for job, _ in batch], now)
        if not chained:
            return self._each(batch, starts, now)
        fresh = [job for (job, _), start in itertools.takewhile(lambda p: p[1] is Start.FIRST, zip(batch, starts))]
        if not fresh:
            return [self._again(*batch[0], starts[0], now)]
        return self._chain(fresh, self._current(fresh[0], batch[0][1]), now)

    def _each(self, batch: list[Queued], starts: list[Start], now: datetime) -> list[JobEnd]:
        """Jobs of different keys: planned each on its own, their versions inserted together."""
        ends: dict[int, JobEnd] = {}
        writes: dict[int, tuple[StoredVersion | None, StoredVersion]] = {}
        presumed: set[int] = set()
        for index, ((job, cached), start) in enumerate(zip(batch, starts)):
            if start is not Start.FIRST:
                ends[index] = self._again(job, cached, start, now)
                continue
            current, plan, unread = self._planned(job, cached, now)
            ends[index] = JobEnd(job, plan.result, plan.text)
            if plan.version is not None:
                writes[index] = (current, plan.version)
            if unread:
                presumed.add(index)
        order = list(writes)
        for collided in self.commit.each(list(writes.values())):
            index, job = order[collided], batch[order[collided]][0]
            ends[index] = self._replanned(job, now) if index in presumed else self._collided(job)
        return [ends[index] for index in range(len(batch))]

    def _planned(self, job: Job, cached: str | None, now: datetime) -> tuple[StoredVersion | None, Plan, bool]:
        """(the version planned on, the plan, whether it was presumed absent and not read): on no resource, unread,
        when that plan writes (version 1, so its insert is the compare-and-set); else on the newest version."""
        if not cached and job.request.action in PRESUMED_NEW:
            plan = self.plan(job, None, now)
            if plan.version is not None:
                return None, plan, True
        current = self._current(job, cached)
        return current, self.plan(job, current, now), False

    def _replanned(self, job: Job, now: datetime) -> JobEnd:
        """A job planned on no resource found version 1 taken: the resource exists (its copy had expired), or the
        job's own earlier attempt wrote it. Planned again on the newest version MongoDB holds."""
        latest = self._db.resources.latest(job.request.resource_type, job.request.resource_id)
        if latest is None or latest.job_id == job.id:
            return self._collided(job)
        return self._chain([job], latest, now)[0]

    def _chain(self, jobs: list[Job], current: StoredVersion | None, now: datetime) -> list[JobEnd]:
        """One key's fresh jobs, each planned on the version the one before made (the first on `current`),
        committed in order."""
        before = current
        plans = []
        for job in jobs:
            plan = self.plan(job, current, now)
            current = plan.version or current
            plans.append(plan)
        versions = [plan.version for plan in plans if plan.version is not None]
        committed = self.commit.in_order(list(zip([before, *versions], versions)))
        if committed < len(versions):  # a collision: keep the jobs before the first version not written
            cut = next(i for i, plan in enumerate(plans) if plan.version is versions[committed])
            if cut == 0:
                return [self._collided(jobs[0])]
            plans = plans[:cut]
        return [JobEnd(job, plan.result, plan.text) for job, plan in zip(jobs, plans)]

    def _again(self, job: Job, cached: str | None, start: Start, now: datetime) -> JobEnd:
        """A job that was not started fresh: cancelled, ended before, its version written before, or (a
        redelivery that died before it committed) applied now."""
        if start is Start.CANCELLED:
            self._db.jobs.cancelled_left([job.id], now)
            return JobEnd(replace(job, state=JobState.CANCELLED, finished_at=now))
        job = self._db.jobs.get(job.id) or job
        if job.state.final:
            return JobEnd(job)
        earlier = self.written_by(job)
        if earlier is not None:
            return self.earlier_result(job, earlier)
        return self._chain([job], self._current(job, cached), now)[0]

    def plan(self, job: Job, current: StoredVersion | None, now: datetime) -> Plan:
        """What the job does to `current`: its result, and the new version to commit. A job that fails, runs past
        its time budget or meets a bug gets its own failed result; it never stops its key."""
        limit = self._settings.job_time_limit_seconds
        try:
            with time_budget(limit):
                return plan_job(job, current, now, self._policies)
        except OverBudget:
            log.warning("job over its time budget", extra={"job_id": job.id, "key": job.key})
            return Plan(JobResult.error(422, "too-costly", _over_budget(limit)), None, None)
        except Exception:  # a bug must fail this job alone, never the key's queue
            log.exception("job failed unexpectedly", extra={"job_id": job.id, "key": job.key})
            return Plan(JobResult.error(500, "exception", UNEXPECTED), None, None)

    def _current(self, job: Job, cached: str | None) -> StoredVersion | None:
        """The version to plan on: the Redis copy the drain step read with the job, else (it read none) MongoDB."""
        if cached:
            return StoredVersion.from_cache(cached)
        return self._db.resources.uncopied(job.request.resource_type, job.request.resource_id)

    def written_by(self, job: Job) -> StoredVersion | None:
        """The version `job` wrote, if it wrote one (it is among the newest versions of its resource)."""
        return self._db.resources.written_by(job.id, job.request.resource_type, job.request.resource_id)

    def earlier_result(self, job: Job, version: StoredVersion) -> JobEnd:
        log.info(
            "job had already written its version; recording that",
            extra={"job_id": job.id, "key": job.key, "version": version.version_id},
        )
        status = 201 if version.version_id == 1 else 200
        return JobEnd(job, JobResult(status, version.version_id, version.last_updated), version.text)

    def _collided(self, job: Job) -> JobEnd:
        """The job's version number was taken: by its own earlier attempt (paused, then resumed; that version is
        its result), or by another writer (the lease is lost). The copy moves forward to what MongoDB holds."""
        latest = self._db.resources.latest(job.request.resource_type, job.request.resource_id)
        if latest is not None:
            self.commit.copy([latest])
        earlier = latest if latest is not None and latest.job_id == job.id else self.written_by(job)
        if earlier is not None:
            return self.earlier_result(job, earlier)
        return JobEnd(job, lease_lost=True)


def _over_budget(limit: float) -> str:
    return (
        f"Applying this job took longer than {limit:g}s (FHIR_PATCH_JOB_TIME_LIMIT_SECONDS); it was stopped and not "
        "applied"
    )
