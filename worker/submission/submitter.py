"""The one submission path: record the job, count it, queue it on its key, make sure a drain is outstanding.

Every way work enters uses it: a single request, a batch or feed block, a
transaction, and a job the reconciler restores after Redis lost it. The order
is the design:
- admitted first (backpressure), so a refused request leaves nothing behind;
- recorded in MongoDB before it is queued in Redis, so Redis is never a job's only copy;
- queued and counted in one Redis step (the schedule's `arrive`); offered only when the key owed no drain yet.
If Redis fails the enqueue, the recorded jobs are withdrawn (cancelled, out of
flight, their Idempotency-Key freed) and the caller answers 503: an accepted
answer always means the job is queued in order.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from worker.errors import FhirError, IdempotencyKeyReused, ServiceBusy, StorageUnavailable
from worker.model.clock import utc_now
from worker.model.jobs import Action, Job, JobRequest, JobState
from worker.model.stores import Stores
from worker.model.transactions import decode_entries, transaction_keys
from worker.ordering.admission import Admission
from worker.schedule import Arrival, KeySchedule
from worker.storage import IdempotencyConflict
from worker.submission.drains import DrainSender

Counting = Callable[[str, int, int], None]  # (group id, accepted, rejected)
T = TypeVar("T")


@dataclass(frozen=True)
class Submission:
    """One request to record as a job."""

    request: JobRequest
    digest: str
    callback_url: str | None = None
    idempotency_key: str | None = None  # scoped to the subject
    shown_key: str | None = None  # the key as the client sent it, for messages


@dataclass(frozen=True)
class Taken:
    """What one block of entries gave: jobs newly queued, entries refused, and where backpressure stopped it."""

    queued: list[str]
    refused: int
    stopped_at: int | None = None  # the first entry number not taken (a feed resumes from here)
    refusal: FhirError | None = None


class Submitter:
    def __init__(
        self,
        database: Stores,
        schedule: KeySchedule,
        admission: Admission,
        drains: DrainSender,
        count_group: Counting,
    ) -> None:
        self._db = database
        self._schedule = schedule
        self._admission = admission
        self._drains = drains
        self._count_group = count_group

    def submit(self, submission: Submission, job_id: str) -> tuple[Job, bool]:
        """Record and queue one job; (the job, True), or for an idempotent repeat (the first request's job, False)."""
        client = submission.request.actor.client_id if submission.request.actor else ""
        job, new = self._admitted(client, lambda: self._record(submission, job_id))
        if not new:
            self._admission.release(client, 1)
            self._queued_before_answer(job)
            return job, False
        try:
            arrival = self._schedule.arrive(job.queue_key, job.id, job.to_payload(), time.time())
        except StorageUnavailable as exc:
            raise self._withdraw([job], "the request was", submission.idempotency_key) from exc
        if arrival is Arrival.SEND_DRAIN:
            self._drains.send([job.queue_key])
        return job, True

    def submit_entries(
        self,
        group_id: str,
        jobs: list[tuple[int, Job]],
        refused: list[tuple[int, dict[str, Any]]],
        client: str,
        partial: bool,
    ) -> Taken:
        """A block of a group's entries (numbered jobs, and the refusals found at intake), queued in entry order.
        Admission takes all of them or none (raises the 429/503), or with `partial` (a feed) the first ones that
        fit: the rest are un-recorded before any queue holds them, and `Taken.stopped_at` says where."""
        now = utc_now()
        block = [job for _, job in jobs]
        new = self._db.jobs.accept_many(block)  # lines a resumed feed sent before are not new
        granted = self._admission.reserve(client, len(new))
        refusal, stopped_at = None, None
        if granted.count < len(new):
            refusal = self._admission.refusal(granted, client, len(new))
            kept = granted.count if partial else 0
            self._db.jobs.forget_many([job.id for job in new[kept:]])
            if not partial:
                self._admission.release(client, granted.count)
                raise refusal
            stopped_at = next(number for number, job in jobs if job.id == new[kept].id)
            new, refused = new[:kept], [r for r in refused if r[0] < stopped_at]
        waiting = self._left_unqueued(jobs, new, stopped_at)
        self._db.groups.refuse(group_id, [(n, e["result"]["status"], e["result"]["outcome"]) for n, e in refused], now)
        queued = {job.id for job in new} | {job.id for job in waiting}
        block = [job for job in block if job.id in queued]  # entry order
        try:
            keys, _held = self._schedule.arrive_many(
                [(job.queue_key, job.id, job.to_payload()) for job in block], time.time()
            )
        except StorageUnavailable as exc:
            raise self._withdraw(new, "the entries of this block were") from exc
        self._drains.send(keys)
        self._count_group(group_id, len(block), len(refused))
        return Taken([job.id for job in block], len(refused), stopped_at, refusal)

    def _left_unqueued(self, jobs: list[tuple[int, Job]], new: list[Job], stopped_at: int | None) -> list[Job]:
        """Entries an earlier attempt of this block recorded and then died before queuing (they were never
        acknowledged): queued now with the block, in entry order, or, past where backpressure stops the block,
        un-recorded like the new ones there (the feed sends them again when it resumes). Queued is asked before
        each is read again, as in `_queued_before_answer`."""
        fresh = {job.id for job in new}
        repeats = [(n, job) for n, job in jobs if job.id not in fresh]
        if not repeats:
            return []
        missing = set(self._schedule.not_queued([job.id for _, job in repeats]))
        found = [(n, self._db.jobs.get(job.id)) for n, job in repeats if job.id in missing]
        lost = [(n, job) for n, job in found if job is not None and not job.state.final]
        late = [job.id for n, job in lost if stopped_at is not None and n >= stopped_at]
        self._db.jobs.forget_many(late)
        return [job for n, job in lost if job.id not in late]

    def submit_transaction(self, job: Job, keys: list[str]) -> None:
        """Record a transaction and queue it on all its keys at once (it runs when it heads every one of them)."""
        self._admitted(job.client, lambda: self._db.jobs.accept(job))  # a transaction is one job
        try:
            to_wake = self._schedule.arrive_transaction(keys, job.id, job.to_payload(), time.time())
        except StorageUnavailable as exc:
            raise self._withdraw([job], "the transaction was") from exc
        self._drains.send(to_wake or [], together=True)  # None: held until Redis is in sync (then queued in order)

    def restore(self, job: Job, keys: list[str]) -> None:
        """Queue a recorded job that no queue holds: its request died between recording and queuing it (so no
        client was told it was accepted, and it was not counted: the count moves in `arrive`)."""
        now = time.time()
        if job.request.action == Action.TRANSACTION:
            to_wake = self._schedule.arrive_transaction(keys, job.id, job.to_payload(), now)
            self._drains.send(to_wake or [], together=True)
            return
        arrival = self._schedule.arrive(job.queue_key, job.id, job.to_payload(), now)
        self._drains.send([job.queue_key] if arrival is Arrival.SEND_DRAIN else [])

    def _admitted(self, client: str, record: Callable[[], T]) -> T:
        """Admit one job of `client`, then record it; the place is given back if recording fails."""
        self._admission.admit(client, 1)
        try:
            return record()
        except BaseException:
            self._admission.release(client, 1)
            raise

    def _record(self, submission: Submission, job_id: str) -> tuple[Job, bool]:
        key = submission.idempotency_key
        job = self._new_job(submission, job_id)
        if key:
            try:
                bound = self._db.jobs.remember_key(key, submission.digest, job.id, job.accepted_at)
            except IdempotencyConflict as exc:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {submission.shown_key!r} was used for a different request", "Idempotency-Key"
                ) from exc
            if bound != job.id:
                return self._bound(submission, bound), False
        try:
            self._db.jobs.accept(job)
        except BaseException:
            if key:
                self._db.jobs.forget_key(key, job.id)
            raise
        return job, True

    @staticmethod
    def _new_job(submission: Submission, job_id: str) -> Job:
        key = submission.idempotency_key
        return Job(
            job_id,
            submission.request,
            JobState.ACCEPTED,
            utc_now(),
            callback_url=submission.callback_url,
            digest=submission.digest,
            extra={"idempotencyKey": key} if key else {},
        )

    def _bound(self, submission: Submission, job_id: str) -> Job:
        """The job an Idempotency-Key is bound to. The request that bound the key records its job a moment later,
        and may die in between: then this retry (the same request: the digests matched) records it under that id
        itself. Recording is idempotent, so a first request that is only slow records the same job, and no retry
        ever meets a key bound to nothing."""
        earlier = self._db.jobs.get(job_id)
        if earlier is not None:
            return earlier
        self._db.jobs.accept(self._new_job(submission, job_id))
        return self._db.jobs.get(job_id) or self._new_job(submission, job_id)

    def _queued_before_answer(self, job: Job) -> None:
        """An idempotent retry answers with the first request's job only once that job stands in its queue: the
        first request may have died between recording and queuing it, and a job acknowledged but not queued would
        be overtaken by the client's later jobs on the resource. Queued is asked before the job is read again (it
        leaves its queue only after its outcome is recorded), so a job that finishes meanwhile is not queued twice.
        If Redis fails here the job stays recorded (another live request may have acknowledged it): 503, retry."""
        if job.state.final or self._schedule.queued(job.id):
            return
        again = self._db.jobs.get(job.id)
        if again is None or again.state.final:
            return
        try:
            self.restore(again, keys_of(again))
        except StorageUnavailable as exc:
            raise ServiceBusy(
                "The job queue (Redis) cannot be reached: the request was not accepted; retry", "request"
            ) from exc

    def _withdraw(self, jobs: list[Job], what: str, idempotency_key: str | None = None) -> ServiceBusy:
        """Jobs recorded but not queued: cancelled and out of flight (nothing applies them later), their admission
        places given back when Redis allows, their Idempotency-Key freed. The 503 to answer: `what` not accepted."""
        self._db.jobs.withdraw_many([job.id for job in jobs], utc_now())
        if idempotency_key and jobs:
            self._db.jobs.forget_key(idempotency_key, jobs[0].id)
        for client, count in Counter(job.client for job in jobs).items():
            with contextlib.suppress(StorageUnavailable):
                self._admission.release(client, count)
        return ServiceBusy(f"The job queue (Redis) cannot be reached: {what} not accepted; retry", "request")


def keys_of(job: Job) -> list[str]:
    """The queues a job stands in (queue keys): its resource's, or every one of a transaction's."""
    if job.request.action == Action.TRANSACTION:
        return transaction_keys(decode_entries(job.request.body), job.tenant)
    return [job.queue_key]
