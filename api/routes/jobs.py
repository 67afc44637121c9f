"""The asynchronous-interaction endpoints: poll a job, cancel it."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.answers import poll_answer
from api.auth import Caller
from api.deps import connections, fhir_base
from api.group_answers import group_status
from api.http import fhir_response
from api.transactions import transaction_answer
from worker.errors import JobStarted, UnknownJob
from worker.model.clock import utc_now
from worker.model.jobs import Action, Job, JobState, outcome_of

router = APIRouter(prefix="/fhir")


def with_correlation(answer: Response, job: Job, header: str) -> Response:
    """A poll answers with the correlation value its job was submitted with (kept in the job's Trace)."""
    submitted = job.request.actor.trace.value(header) if header and job.request.actor else None
    if submitted is not None:
        answer.headers[header] = submitted
    return answer


@router.get("/_async/{job_id}")
async def poll(job_id: str, request: Request, caller: Caller) -> Response:
    """202 with X-Progress while pending, 200 with the batch-response Bundle when done, 404 if unknown, expired,
    cancelled, or someone else's."""
    conn = connections(request)
    job = await anyio.to_thread.run_sync(conn.database.jobs.get, job_id)
    if job is not None and not caller.owns(job.owner):
        job = None
    if job is None:
        answer = await group_status(request, job_id, caller)
        if answer is not None:
            return answer
    if job is None or job.state == JobState.CANCELLED:
        raise UnknownJob(
            f"No job {job_id!r}: it never existed, was cancelled, or expired after the retention period", "job"
        )
    if job.request.action == Action.TRANSACTION and job.state == JobState.APPLIED:
        answer = await anyio.to_thread.run_sync(transaction_answer, conn, job, fhir_base(request))
    else:
        done = await conn.intake.finished(job_id) if job.state.final else None
        answer = poll_answer(job, done, fhir_base(request))
    return with_correlation(answer, job, conn.settings.correlation_header)


@router.delete("/_async/{job_id}")
async def cancel(job_id: str, request: Request, caller: Caller) -> Response:
    """Cancel a job that has not started: 202, and it is never applied. 409 once it started, 404 if unknown or
    someone else's."""
    conn = connections(request)
    jobs = conn.database.jobs
    job = await anyio.to_thread.run_sync(jobs.get, job_id)
    if job is not None and not caller.owns(job.owner):
        job = None
    group = await anyio.to_thread.run_sync(conn.database.groups.get, job_id) if job is None else None
    if group is not None and group.total is not None and caller.owns(group.owner):
        cancelled = await anyio.to_thread.run_sync(conn.groups.cancel, group)
        return fhir_response(
            outcome_of(
                "information",
                "informational",
                f"{cancelled} entries of {job_id} cancelled; entries already started finish",
            ),
            202,
        )
    if job is None or job.state == JobState.CANCELLED:
        raise UnknownJob(f"No job {job_id!r} to cancel (never existed, already cancelled, or expired)", "job")
    if not job.state.final and await anyio.to_thread.run_sync(jobs.cancel, job_id, utc_now()):
        return fhir_response(
            outcome_of("information", "informational", f"Job {job_id} cancelled; it will not be applied"), 202
        )
    raise JobStarted(f"Job {job_id} has already started; only a job that has not started can be cancelled", "job")
