"""Accept a checked request as a job (through the one submission path), and optionally wait for it.

A synchronous caller expects the wake-up before the job is queued (api/waiter.py: so it cannot finish unseen);
the submission path (worker/submission/) records, counts and queues the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import anyio

from api.waiter import ResultWaiter
from worker.model.clock import utc_now
from worker.model.jobs import Job, JobRequest, JobState
from worker.model.stores import Stores
from worker.model.wakeups import WakeUp
from worker.patch import ParsedPatch
from worker.submission import Submission, Submitter
from worker.submission.direct import DirectApply


@dataclass(frozen=True)
class Finished:
    """A finished job and the stored text of the version it answers with (None for errors and deletions)."""

    job: Job
    text: str | None


class Intake:
    def __init__(
        self, database: Stores, submitter: Submitter, waiter: ResultWaiter, direct: DirectApply | None = None
    ) -> None:
        self._db = database
        self._submitter = submitter
        self._waiter = waiter
        self._direct = direct

    async def submit(
        self, submission: Submission, wait_seconds: float | None, check: Callable[[], object] = lambda: None
    ) -> Job | Finished:
        """Accept (or find, for an idempotent retry) the job and queue it, in one trip to a thread that first runs
        `check` (the request's last checks: nothing is read or written if it raises); with `wait_seconds`, wait for
        it to finish (its wake-up is expected before it is queued, so none is missed). A waiting request on an idle
        key with no job record to keep is applied here instead (worker/submission/direct.py)."""
        job_id = Job.new_id()
        direct = self._direct if wait_seconds is not None and not _needs_record(submission) else None

        def checked_submit() -> tuple[Job, bool] | Finished:
            checked = check()
            if direct is not None and (
                answer := direct.apply(_parsed_once(submission, checked), job_id, submission.digest)
            ):
                return Finished(*answer)
            return self._submitter.submit(submission, job_id)

        async with self._waiter.expect([job_id] if wait_seconds is not None else []) as expected:
            submitted = await anyio.to_thread.run_sync(checked_submit)
            if isinstance(submitted, Finished):
                return submitted
            job, new = submitted
            if wait_seconds is None:
                return job
            if not new:  # an idempotent retry: the first request's job, which may have ended already
                done = await (
                    self.finished(job.id) if job.state.final else expected.instead(job_id, job.id, self.finished)
                )
                if done is not None or job.state.final:
                    return done or job
            message = await expected.wait(job.id, wait_seconds)
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


def _parsed_once(submission: Submission, checked: object) -> JobRequest:
    """The request with the patch its check parsed, if it was a patch (so that it is not parsed again)."""
    return replace(submission.request, parsed=checked) if isinstance(checked, ParsedPatch) else submission.request


def _needs_record(submission: Submission) -> bool:
    """A retry with an Idempotency-Key must find the first request's job, and a callback is owed by its record."""
    return submission.idempotency_key is not None or submission.callback_url is not None


def _from_message(job: Job, wakeup: WakeUp) -> Finished:
    if wakeup.state == JobState.CANCELLED:
        return Finished(job, wakeup.text)
    return Finished(job.finished(wakeup.result, utc_now()), wakeup.text)
