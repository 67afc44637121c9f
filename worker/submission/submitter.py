"""The one submission path: record the job, count it, queue it on its key, make sure a drain is outstanding.

Every way work enters uses it: a single request, a batch or feed block, a
transaction, and a job the reconciler restores after Redis lost it. The order
is the design:
- admitted first (backpressure), so a refused request leaves nothing behind;
- recorded in MongoDB before it is queued in Redis, so Redis is never a job's only copy;
- queued and counted in one Redis round trip; a drain message only when the key had none outstanding.
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
from worker.ordering.admission import Admission
from worker.ordering.arrivals import Arrival, Arrivals
from worker.ordering.metrics import Metrics
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
        arrivals: Arrivals,
        admission: Admission,
        metrics: Metrics,
        drains: DrainSender,
        count_group: Counting,
    ) -> None:
        self._db = database
        self._arrivals = arrivals
        self._admission = admission
        self._metrics = metrics
        self._drains = drains
        self._count_group = count_group

    def submit(self, submission: Submission, job_id: str) -> tuple[Job, bool]:
        """Record and queue one job; (the job, True), or for an idempotent repeat (the first request's job, False)."""
        client = submission.request.actor.client_id if submission.request.actor else ""
        job, new = self._admitted(client, lambda: self._record(submission, job_id))
        if not new:
            self._admission.release(client, 1)
            return job, False
        try:
            arrival = self._arrivals.enqueue(job.key, job.id, job.to_payload(), time.time())
        except StorageUnavailable as exc:
            raise self._withdraw([job], "the request was", submission.idempotency_key) from exc
        if arrival is Arrival.SEND_DRAIN:
            self._drains.send([job.key])
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
        new = self._db.jobs.accept_many([job for _, job in jobs])  # lines a resumed feed sent before are not new
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
        self._db.groups.refuse(group_id, [(n, e["result"]["status"], e["result"]["outcome"]) for n, e in refused], now)
        try:
            keys, _held = self._arrivals.enqueue_many([(job.key, job.id, job.to_payload()) for job in new], time.time())
        except StorageUnavailable as exc:
            raise self._withdraw(new, "the entries of this block were") from exc
        self._drains.send(keys)
        self._metrics.accepted(len(new))
        self._count_group(group_id, len(new), len(refused))
        return Taken([job.id for job in new], len(refused), stopped_at, refusal)

    def submit_transaction(self, job: Job, keys: list[str]) -> None:
        """Record a transaction and queue it on all its keys at once (it runs when it heads every one of them)."""
        self._admitted(job.client, lambda: self._db.jobs.accept(job))  # a transaction is one job
        self._metrics.accepted()
        try:
            to_wake = self._arrivals.enqueue_transaction(keys, job.id, job.to_payload(), time.time())
        except StorageUnavailable as exc:
            raise self._withdraw([job], "the transaction was") from exc
        self._drains.send(to_wake or [], together=True)  # None: held until Redis is in sync (then queued in order)

    def restore(self, job: Job, keys: list[str]) -> None:
        """Queue again a recorded job that no queue holds (Redis lost it); it was counted when first accepted."""
        now = time.time()
        if job.request.action == Action.TRANSACTION:
            self._drains.send(
                self._arrivals.enqueue_transaction(keys, job.id, job.to_payload(), now) or [], together=True
            )
            return
        arrival = self._arrivals.enqueue(job.key, job.id, job.to_payload(), now, count=False)
        self._drains.send([job.key] if arrival is Arrival.SEND_DRAIN else [])

    def _admitted(self, client: str, record: Callable[[], T]) -> T:
        """Admit one job of `client`, then record it; the place is given back if recording fails."""
        self._admission.admit(client, 1)
        try:
            return record()
        except BaseException:
            self._admission.release(client, 1)
            raise

    def _record(self, submission: Submission, job_id: str) -> tuple[Job, bool]:
        now = utc_now()
        key = submission.idempotency_key
        job = Job(
            job_id,
            submission.request,
            JobState.ACCEPTED,
            now,
            callback_url=submission.callback_url,
            digest=submission.digest,
            extra={"idempotencyKey": key} if key else {},
        )
        if key:
            try:
                bound = self._db.jobs.remember_key(key, submission.digest, job.id, now)
            except IdempotencyConflict as exc:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {submission.shown_key!r} was used for a different request", "Idempotency-Key"
                ) from exc
            if bound != job.id:
                return self._earlier(bound), False
        try:
            self._db.jobs.accept(job)
        except BaseException:
            if key:
                self._db.jobs.forget_key(key, job.id)
            raise
        return job, True

    def _earlier(self, job_id: str) -> Job:
        # The first request binds the key a moment before it records its job.
        for _ in range(50):
            job = self._db.jobs.get(job_id)
            if job is not None:
                return job
            time.sleep(0.02)
        raise IdempotencyKeyReused(
            f"The request first sent with this Idempotency-Key (job {job_id}) was not recorded; retry",
            "Idempotency-Key",
        )

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
