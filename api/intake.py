"""Accept a checked request as a job: record it durably, queue it on its resource key, optionally wait.

The order matters: the job is in MongoDB before it is in Redis (so Redis is
never its only copy), and a synchronous caller registers for the wake-up
before the job is queued (so it cannot finish unseen).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from celery import Celery
from redis.exceptions import RedisError

from api.waiter import ResultWaiter
from worker.celery.tasks import DRAIN_TASK
from worker.model.access import ServiceBusy
from worker.model.clock import utc_now
from worker.model.jobs import Job, JobRequest, JobResult, JobState
from worker.ordering import KeyQueues
from worker.ordering.admission import Admission
from worker.ordering.arrivals import Arrival
from worker.patch.errors import IdempotencyKeyReused
from worker.storage import Database, IdempotencyConflict

log = logging.getLogger("fhir_patch.intake")


def withdraw(
    db: Database, admission: Admission, jobs: list[Job], what: str, idempotency_key: str | None = None
) -> ServiceBusy:
    """Jobs recorded but not queued because Redis failed the enqueue: cancelled and out of flight (so nothing
    applies them later), their admission places given back when Redis allows, their Idempotency-Key freed.
    Returns the 503 to answer: `what` ("the request was", ...) not accepted."""
    db.jobs.withdraw_many([job.id for job in jobs], utc_now())
    if idempotency_key and jobs:
        db.jobs.forget_key(idempotency_key, jobs[0].id)
    for client, count in Counter(job.client for job in jobs).items():
        with contextlib.suppress(RedisError):
            admission.release(client, count)
    return ServiceBusy(f"The job queue (Redis) cannot be reached: {what} not accepted; retry", "request")


def send_drain(celery: Celery, keys: list[str]) -> None:
    """Send the drain message of `keys`; if the broker fails it, the keys are queued and marked sent, so the
    reconciler sends it again once the broker holds no message for them."""
    try:
        celery.send_task(DRAIN_TASK, args=[keys if len(keys) > 1 else keys[0]])
    except Exception:
        log.warning("drain message not sent; the reconciler will send it", exc_info=True, extra={"keys": len(keys)})


@dataclass(frozen=True)
class Submission:
    request: JobRequest
    digest: str
    callback_url: str | None = None
    idempotency_key: str | None = None  # scoped to the subject (api.routes.fhir.idempotency_key)
    shown_key: str | None = None  # the key as the client sent it, for messages


@dataclass(frozen=True)
class Finished:
    """A finished job and the stored text of the version it answers with (None for errors and deletions)."""

    job: Job
    text: str | None


class Intake:
    def __init__(
        self,
        database: Database,
        queues: KeyQueues,
        celery: Celery,
        waiter: ResultWaiter,
        admission: Admission,
    ) -> None:
        self._admission = admission
        self._db = database
        self._queues = queues
        self._celery = celery
        self._waiter = waiter

    async def submit(self, submission: Submission, wait_seconds: float | None) -> Job | Finished:
        """Accept (or find, for an idempotent retry) the job and queue it, in one trip to a thread; with
        `wait_seconds`, wait for it to finish (its wake-up is awaited before it is queued, so none is missed)."""
        job_id = Job.new_id()
        future = self._waiter.register(job_id) if wait_seconds is not None else None
        try:
            job, new = await anyio.to_thread.run_sync(self._accept_and_enqueue, submission, job_id)
        except BaseException:
            self._waiter.forget(job_id)
            raise
        if wait_seconds is None:
            return job
        if not new:  # an idempotent retry: the first request's job
            self._waiter.forget(job_id)
            if job.state.final:
                return await self.finished(job.id) or job
            future = self._waiter.register(job.id)
        assert future is not None
        message = await self._waiter.wait(job.id, future, wait_seconds)
        if message is not None:
            return _from_message(job, message)
        return await self.finished(job.id) or job  # it may have ended while the wake-up was missed

    async def finished(self, job_id: str) -> Finished | None:
        return await anyio.to_thread.run_sync(self._finished, job_id)

    def _finished(self, job_id: str) -> Finished | None:
        job = self._db.jobs.get(job_id)
        if job is None or not job.state.final or job.result is None:
            return None
        text = None
        if job.result.version_id is not None:
            version = self._db.resources.version(
                job.request.resource_type, job.request.resource_id, job.result.version_id
            )
            text = version.text if version else None
        return Finished(job, text)

    def _accept_and_enqueue(self, submission: Submission, job_id: str) -> tuple[Job, bool]:
        job, new = self._accept(submission, job_id)
        if new:
            self._enqueue(job, submission)
        return job, new

    def _accept(self, submission: Submission, job_id: str) -> tuple[Job, bool]:
        """Admit, then record; a place reserved for a job not recorded after all is given back."""
        client = submission.request.actor.client_id if submission.request.actor else ""
        self._admission.admit(client, 1)
        try:
            job, new = self._record(submission, job_id)
        except BaseException:
            self._admission.release(client, 1)
            raise
        if not new:
            self._admission.release(client, 1)
        return job, new

    def _record(self, submission: Submission, job_id: str) -> tuple[Job, bool]:
        now = utc_now()
        extra = {"idempotencyKey": submission.idempotency_key} if submission.idempotency_key else {}
        job = Job(
            job_id,
            submission.request,
            JobState.ACCEPTED,
            now,
            callback_url=submission.callback_url,
            digest=submission.digest,
            extra=extra,
        )
        if submission.idempotency_key:
            try:
                bound = self._db.jobs.remember_key(submission.idempotency_key, submission.digest, job.id, now)
            except IdempotencyConflict as exc:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {submission.shown_key!r} was used for a different request", "Idempotency-Key"
                ) from exc
            if bound != job.id:
                return self._earlier(bound), False
        try:
            self._db.jobs.accept(job)
        except BaseException:
            if submission.idempotency_key:
                self._db.jobs.forget_key(submission.idempotency_key, job.id)
            raise
        return job, True  # counted accepted where it is queued (Arrivals.enqueue)

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

    def _enqueue(self, job: Job, submission: Submission) -> None:
        """Queue the recorded job. If Redis fails it, the job is withdrawn (cancelled, out of flight, its key freed)
        and the answer is 503: a 202 always means the job is queued in order (or held until Redis is in sync)."""
        try:
            arrival = self._queues.arrivals.enqueue(job.key, job.id, job.to_payload(), time.time())
        except RedisError as exc:
            raise withdraw(self._db, self._admission, [job], "the request was", submission.idempotency_key) from exc
        if arrival is Arrival.SEND_DRAIN:
            send_drain(self._celery, [job.key])


def _from_message(job: Job, message: dict[str, Any]) -> Finished:
    result: dict[str, Any] = dict(message["result"])
    if isinstance(result.get("lastUpdated"), str):
        result["lastUpdated"] = datetime.fromisoformat(result["lastUpdated"])
    state = JobState(message["state"])
    finished = JobResult.from_document(result)
    return Finished(job.finished(finished, utc_now()) if state != JobState.CANCELLED else job, message.get("text"))
