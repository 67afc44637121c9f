"""Apply jobs: drain one resource key, one job at a time, in the order they were accepted.

For each job at the head of the key's queue:
  1. claim it in MongoDB (accepted -> running; a cancelled job is skipped),
  2. read the current version; if this job already wrote a version (a
     redelivery after a crash) take that as its result,
  3. otherwise plan the change (pure) and commit version n+1 with a
     compare-and-set on n,
  4. record the outcome durably, publish the wake-up, and only then take the
     job off the queue.
A crash between any two steps repeats at most the steps after the last
durable one, and the job-id check in step 2 makes a repeat harmless.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from worker.errors import FhirError
from worker.model.changes import Existing, identifiers, plan_change, stamped
from worker.model.clock import utc_now
from worker.model.groups import group_of
from worker.model.jobs import Action, Job, JobResult, JobState, result_event
from worker.model.provenance import provenance_text
from worker.model.versions import StoredVersion
from worker.model.wakeups import WakeUp
from worker.ordering import Finished, Heads, KeyQueues
from worker.patch.fhir_json import dumps
from worker.service.budget import OverBudget, time_budget
from worker.service.transaction import Released, TransactionRunner
from worker.settings import Settings
from worker.storage import Database, VersionConflict

log = logging.getLogger("fhir_patch.service")

MAX_JOBS_PER_DRAIN = 200  # then hand the key back to the queue, so one busy resource cannot hold a worker
BATCH = 50  # jobs of one key applied together: one bulk insert each of gates, versions and results
MAX_JOB_ATTEMPTS = 3  # drains that died (or failed) at the same head job before that job fails alone


class LeaseLost(Exception):
    """Another worker owns the key now; stop draining without touching its queue."""


@dataclass(frozen=True)
class Drained:
    processed: int
    more: bool  # jobs remain: a new drain message must be sent
    held_elsewhere: bool = False  # another drain holds the key's lease: it (or, if it died, the reconciler) goes on


class ChangeService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        queues: KeyQueues,
        on_finished: Callable[[Job], None] = lambda job: None,
        clock: Callable[[], datetime] = utc_now,
        send_drain: Callable[[str], None] = lambda key: None,
        holder: str = "",
        holder_gone: Callable[[str], bool] = lambda holder: False,
    ) -> None:
        """`holder` names this process in the leases it takes; `holder_gone(h)` says whether the process named
        `h` is known to be dead (its leases are then taken over at once instead of waiting for them to expire)."""
        self._settings = settings
        self._holder = holder
        self._holder_gone = holder_gone
        self._db = database
        self._queues = queues
        self._on_finished = on_finished
        self._clock = clock
        self._transactions = TransactionRunner(
            settings, database, queues, database.resources.newest, self._index, send_drain, clock
        )

    def drain(self, key: str) -> Drained:
        """Apply the key's queued jobs while holding its lease."""
        lease = self._settings.lease_seconds
        token = self._queues.leases.acquire(key, lease, self._holder) or self._take_over(key)
        if token is None:
            return Drained(
                0, False, held_elsewhere=True
            )  # its holder drains it (or the reconciler revives it when the lease expires)
        processed, finished = 0, list[Finished]()
        try:
            while True:
                heads = self._queues.leases.next_jobs(
                    key, token, lease, finished, BATCH
                )  # also takes `finished` off the queue, counted
                if heads is None:
                    raise LeaseLost(key)
                finished = []
                if not heads.jobs or processed >= MAX_JOBS_PER_DRAIN:
                    break
                finished = self._run_heads(heads, key, token)
                processed += len(finished)
        except Released:  # a transaction ran (and woke its keys) or is waiting for another key: this drain is over
            return Drained(processed, False)
        except LeaseLost:
            log.warning("lease lost; another worker continues", extra={"key": key, "processed": processed})
            return Drained(processed, False)
        except BaseException:
            self._queues.leases.release(key, token)  # let a retry start at once instead of waiting out the lease
            raise
        return Drained(processed, self._queues.leases.release(key, token))

    def _take_over(self, key: str) -> str | None:
        """The lease of a holder that died mid-drain (its message came back to us): taken now, and the job it
        was applying counts one attempt; after MAX_JOB_ATTEMPTS that job fails alone, so a job that kills its
        worker (or runs past the task's hard time limit) every time cannot stop its key."""
        held = self._queues.leases.lease_holder(key)
        if held is None or not self._holder_gone(held[0]):
            return None
        token = self._queues.leases.take_over(key, held[1], self._settings.lease_seconds, self._holder)
        if token is None:
            return None
        job_id, _ = self._queues.leases.head(key)
        attempts = self._queues.leases.attempt(job_id) if job_id else 0
        log.warning(
            "took over the lease of a dead worker",
            extra={"key": key, "job_id": job_id, "attempt": attempts, "holder": held[0]},
        )
        if job_id and attempts >= MAX_JOB_ATTEMPTS:
            limit = self._settings.job_time_limit_seconds
            self.give_up(
                key,
                attempts,
                JobResult.error(
                    422,
                    "too-costly",
                    f"Applying this job stopped its worker {attempts} times (past the time limit of "
                    f"{limit:g}s per job, or the process died); it was not applied, and later jobs on the resource go "
                    f"on",
                ),
            )
        return token

    def _run_heads(self, heads: Heads, key: str, token: str) -> list[Finished]:
        """Apply the first jobs of the queue; the ones that ended, in queue order (a transaction takes itself off)."""
        first_id, first_payload = heads.jobs[0]
        jobs = [
            Job.from_payload(p)
            for _, p in itertools.takewhile(lambda pair: pair[1] is not None, heads.jobs)
            if p is not None
        ]
        first = jobs[0] if jobs else self._db.jobs.accepted(first_id)
        if first is not None and first.request.action == Action.TRANSACTION:
            self._transactions.run(first, key, token)  # raises Released
        singles = list(itertools.takewhile(lambda job: job.request.action != Action.TRANSACTION, jobs))
        if len(singles) > 1:
            ended = self._run_batch(singles, heads.cached_newest)
            if ended:
                return ended
        return [_leaving(first_id, self.run_job(first_id, first_payload, heads.cached_newest))]

    def _run_batch(self, jobs: list[Job], cached_newest: str | None) -> list[Finished]:
        """Jobs never started before, applied in order in memory, then committed together. A collision (another
        writer) keeps only what was committed before it; the rest goes one by one through run_job. Empty when
        the first job is not a fresh start (a redelivery or a cancel: run_job handles those)."""
        now = self._clock()
        starts = self._db.jobs.start_many([job.id for job in jobs], now)
        fresh = list(itertools.takewhile(lambda pair: pair[1] == "first", zip(jobs, starts)))
        if not fresh:
            return []
        current = StoredVersion.from_cache(cached_newest) if cached_newest else self._newest(fresh[0][0])
        before = current
        planned: list[tuple[Job, JobResult, StoredVersion | None, str | None]] = []
        for job, _ in fresh:
            result, new, text = self._plan(job, current, now)
            current = new or current
            planned.append((job, result, new, text))
        versions = [new for _, _, new, _ in planned if new is not None]
        self._index(list(zip([before, *versions], versions)))
        committed = self._db.resources.commit_many(versions)
        if committed < len(versions):  # keep the jobs before the first version not written
            cut = next(i for i, (_, _, new, _) in enumerate(planned) if new is versions[committed])
            planned = planned[:cut]
        if committed:
            newest = versions[committed - 1]
            self._queues.copies.remember_newest(newest.key, newest.version_id, newest.to_cache())
        return [_leaving(job.id, job) for job in self._finish_many(planned)]

    def _index(self, changes: list[tuple[StoredVersion | None, StoredVersion]]) -> None:
        """Index identifiers the new versions add, before they are committed (so the index never misses one)."""
        entries = []
        for old, new in changes:
            if new.text is None or '"identifier"' not in new.text:
                continue
            added = identifiers(new.resource()) - identifiers(old.resource() if old is not None and old.text else None)
            entries += [(new.resource_type, system, value, new.resource_id) for system, value in added]
        self._db.identifiers.add(entries)

    def _finish_many(self, planned: list[tuple[Job, JobResult, StoredVersion | None, str | None]]) -> list[Job]:
        """Record the outcomes (one bulk insert; a repeat changes nothing), publish the wake-ups, owe the callbacks."""
        now = self._clock()
        recorded = self._db.jobs.finish_many([result_event(job, result, now) for job, result, _, _ in planned])
        ended, wakeups = [], []
        for job, result, _, text in planned:
            finished = job.finished(result, now)
            wakeups.append(WakeUp(job.id, finished.state, result, text).encode())
            if job.id in recorded:
                log.info(
                    "job %s",
                    finished.state.value,
                    extra={"job_id": job.id, "key": job.key, "status": result.status, "version": result.version_id},
                )
                if job.callback_url:
                    self._on_finished(finished)
            ended.append(finished)
        self._queues.wakeups.publish(wakeups)
        return ended

    def run_job(self, job_id: str, payload: str | None = None, cached_newest: str | None = None) -> Job | None:
        """Bring one job to a final state (or find it there); None when the job is unknown or expired.

        `payload` and `cached_newest` are the Redis copies of the request and of the newest version, when known."""
        job = Job.from_payload(payload) if payload else self._db.jobs.accepted(job_id)
        if job is None:
            log.warning("queued job not found (expired?)", extra={"job_id": job_id})
            return None
        started = self._db.jobs.start(job_id, self._clock())
        if started == "cancelled":
            self._db.jobs.cancelled_left([job_id], self._clock())
            return replace(job, state=JobState.CANCELLED, finished_at=self._clock())
        if started == "again":  # a redelivery: it may have ended, or written its version, already
            job = self._db.jobs.get(job_id) or job
            if job.state.final:
                return job
            earlier = self._db.resources.written_by(job.id, job.request.resource_type, job.request.resource_id)
            if earlier is not None:
                return self._finish(job, *self._earlier_result(job, earlier))
        current = StoredVersion.from_cache(cached_newest) if cached_newest else self._newest(job)
        return self._finish(job, *self._apply(job, current))

    def give_up(self, key: str, attempts: int, result: JobResult | None = None) -> str | None:
        """Fail the job at the head of `key` alone, after `attempts` attempts that raised: its own outcome says so
        (or, if it had written its version before failing, that version is its result), and the key moves on."""
        job_id, payload = self._queues.leases.head(key)
        job = Job.from_payload(payload) if payload else (self._db.jobs.accepted(job_id) if job_id else None)
        if job is None:
            return None
        earlier = None
        if job.request.action != Action.TRANSACTION:
            earlier = self._db.resources.written_by(job.id, job.request.resource_type, job.request.resource_id)
        if earlier is not None:
            self._finish(job, *self._earlier_result(job, earlier))
        else:
            log.error(
                "job given up after repeated failures", extra={"job_id": job.id, "key": key, "attempts": attempts}
            )
            self._finish(
                job,
                result
                or JobResult.error(
                    500,
                    "exception",
                    f"The server failed {attempts} times while applying "
                    "this job; it was not applied, and later jobs on the resource go on",
                ),
                None,
            )
        return job.id

    def _newest(self, job: Job) -> StoredVersion | None:
        return self._db.resources.newest(job.request.resource_type, job.request.resource_id)

    def _plan(
        self, job: Job, current: StoredVersion | None, now: datetime
    ) -> tuple[JobResult, StoredVersion | None, str | None]:
        """What the job does to `current`: its result, and the new version to commit (None: nothing to write)."""
        request = job.request
        existing = Existing(current.version_id, None if current.deleted else current.resource()) if current else None
        try:
            with time_budget(self._settings.job_time_limit_seconds):
                planned = plan_change(
                    request, existing, self._settings.element_policies, self._settings.client_element_policies
                )
        except FhirError as exc:
            return JobResult(exc.status, outcome=exc.outcome), None, None
        except OverBudget:
            log.warning("job over its time budget", extra={"job_id": job.id, "key": job.key})
            return (
                JobResult.error(
                    422,
                    "too-costly",
                    f"Applying this job took longer than {self._settings.job_time_limit_seconds:g}s "
                    "(FHIR_PATCH_JOB_TIME_LIMIT_SECONDS); it was stopped and not applied",
                ),
                None,
                None,
            )
        except Exception:  # a bug must fail this job alone, never the key's queue
            log.exception("job failed unexpectedly", extra={"job_id": job.id, "key": job.key})
            return (
                JobResult.error(500, "exception", "The server failed while applying this job; it was not applied"),
                None,
                None,
            )
        if not planned.write:
            assert current is not None
            return (
                JobResult(planned.status, current.version_id, current.last_updated, planned.outcome),
                None,
                current.text,
            )
        version_id = current.version_id + 1 if current else 1
        text = (
            dumps(stamped(planned.resource, request.resource_id, version_id, now))
            if planned.resource is not None
            else None
        )
        new = StoredVersion(
            request.resource_type,
            request.resource_id,
            version_id,
            now,
            text,
            job.id,
            request.action.value,
            provenance=provenance_text(request, version_id, now, text is None, job.id),
        )
        return JobResult(planned.status, version_id, now, planned.outcome), new, text

    def _apply(self, job: Job, current: StoredVersion | None) -> tuple[JobResult, str | None]:
        result, new, text = self._plan(job, current, self._clock())
        if new is None:
            return result, text
        self._index([(current, new)])
        try:
            self._db.resources.commit(new)
            self._queues.copies.remember_newest(job.key, new.version_id, new.to_cache())
        except VersionConflict as exc:
            if exc.latest is not None:
                self._queues.copies.remember_newest(job.key, exc.latest.version_id, exc.latest.to_cache())
            earlier = (
                exc.latest
                if exc.latest is not None and exc.latest.job_id == job.id
                else self._db.resources.written_by(job.id, job.request.resource_type, job.request.resource_id)
            )
            if earlier is not None:
                return self._earlier_result(
                    job, earlier
                )  # our own earlier attempt (paused, then resumed) got there first
            raise LeaseLost(job.key) from exc
        return result, text

    def _earlier_result(self, job: Job, version: StoredVersion) -> tuple[JobResult, str | None]:
        log.info(
            "job had already written its version; recording that",
            extra={"job_id": job.id, "key": job.key, "version": version.version_id},
        )
        return JobResult(
            201 if version.version_id == 1 else 200, version.version_id, version.last_updated
        ), version.text

    def _finish(self, job: Job, result: JobResult, text: str | None) -> Job:
        return self._finish_many([(job, result, None, text)])[0]


def _leaving(job_id: str, job: Job | None) -> Finished:
    if job is None or not job.state.final:
        return Finished(job_id, "", 0.0)  # unknown (expired) job: nothing to count
    ended = job.finished_at or job.accepted_at
    return Finished(
        job_id, job.state.value, max(0.0, (ended - job.accepted_at).total_seconds()), group_of(job_id), job.client
    )
