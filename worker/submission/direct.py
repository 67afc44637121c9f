"""A synchronous request applies its own job when its key is idle: no job record, no queue, no worker.

A client waiting for its PATCH (or PUT, POST, DELETE) is answered by the API process itself when nothing is
queued on the resource, no drain is owed it and no lease is held (the schedule's `claim`, one Redis step). The
request then holds the key's lease, plans the change exactly as a worker does (worker/model/planning.py),
commits the version through the one writer of versions (worker/ordering/commit.py), and gives the key up
(`settle`, one Redis step that also counts the job), offering it when jobs arrived meanwhile. What arrives while
the key is claimed queues behind it, so arrival order holds; the compare-and-set insert of the version keeps
one writer per version even if the lease expired, and a version that collides sends the job through the queue.

The committed version, with its Provenance naming the job, is the job's only record and the answer. A crash
before it commits leaves nothing, and no client was told anything; a crash after it leaves the version, whose
answer the client did not get (as with any FHIR server); the lease then expires and the reconciler offers
whatever queued behind it. Requests that need a job record use the queue: those with an Idempotency-Key (a
retry must find the first job), a callback or `respond-async`; so does every request while Redis is out of sync
with MongoDB, since an empty queue then proves nothing.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime

from worker.errors import StorageUnavailable
from worker.model.jobs import Job, JobRequest, JobState, traced_fields
from worker.model.planning import Plan, Policies
from worker.model.stores import Stores
from worker.model.versions import StoredVersion
from worker.ordering.commit import Commit
from worker.schedule import KeySchedule
from worker.schedule.port import Finished, leaving
from worker.settings import Settings
from worker.submission.drains import DrainSender
from worker.submission.dry_run import planned_safely

log = logging.getLogger("fhir_patch.direct")

Answer = tuple[Job, str | None]  # the finished job, and the stored text it answers with (None: none)
Written = tuple[Answer, StoredVersion | None]  # and the version it wrote (None: none)


def api_holder(pid: int) -> str:
    """The lease holder an API process claims keys as: never taken for a dead worker's (its pid is not a number
    that worker/celery/runtime.py `process_gone` reads), so a claim ends by its settle or its lease expiring."""
    return f"{socket.gethostname()}:api-{pid}"


class DirectApply:
    def __init__(
        self,
        settings: Settings,
        database: Stores,
        schedule: KeySchedule,
        commit: Commit,
        drains: DrainSender,
        holder: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._db = database
        self._schedule = schedule
        self._commit = commit
        self._drains = drains
        self._holder = holder
        self._clock = clock
        self._policies = Policies(settings.element_policies, settings.client_element_policies)

    def apply(self, request: JobRequest, job_id: str, digest: str) -> Answer | None:
        """Apply the job now if its key is idle: the finished job and its answer's text; None when the key was not
        idle (or the version collided): then nothing of the job was written, and it goes through the queue."""
        job = Job(job_id, request, JobState.ACCEPTED, self._clock(), digest=digest)
        token = self._schedule.new_token(self._holder)
        claimed = self._schedule.claim(job.queue_key, token, self._settings.lease_seconds, time.time())
        if claimed is None:
            return None
        written: Written | None = None
        try:
            written = self._applied(job, claimed.cached_newest)
        finally:
            self._settle(job, token, written)
        return written[0] if written is not None else None

    def _applied(self, job: Job, cached: str | None) -> Written | None:
        request = job.request
        current = (
            StoredVersion.from_cache(cached)
            if cached
            else self._db.resources.uncopied(request.resource_type, request.resource_id)
        )
        now = self._clock()
        plan = self._plan(job, current, now)
        if plan.version is not None and self._commit.each([(current, plan.version)], copied=False):
            latest = self._db.resources.latest(
                request.resource_type, request.resource_id
            )  # the copy was behind, or a late writer won
            self._commit.copy([latest] if latest is not None else [])
            return None
        finished = job.finished(plan.result, now)
        extra = {"job_id": job.id, "key": job.key, "status": plan.result.status, "version": plan.result.version_id}
        log.info("job %s", finished.state.value, extra={**extra, "direct": True, **traced_fields(job)})
        return (finished, plan.text), plan.version

    def _plan(self, job: Job, current: StoredVersion | None, now: datetime) -> Plan:
        return planned_safely(job, current, now, self._policies, "job failed unexpectedly")

    def _settle(self, job: Job, token: str, written: Written | None) -> None:
        """Keep the copy of the version written, give the key up and count the job (not one that collided or raised:
        it was not applied here). Once its version is committed a Redis failure here does not fail the answer: the
        lease expires and the reconciler offers what queued behind it (a read moves a copy that is behind)."""
        if written is None:
            done, copy = Finished(job.id, "", 0.0), None
        else:
            (finished, _), version = written
            done, copy = leaving(job.id, finished), version and (version.version_id, version.to_cache())
        with contextlib.suppress(StorageUnavailable) if written is not None else contextlib.nullcontext():
            if self._schedule.settle(job.queue_key, token, done, time.time(), copy or None):
                self._drains.send([job.queue_key])
