"""Finish jobs: record their outcomes, publish their wake-ups, owe their callbacks, say how each leaves its queue.

The result insert is idempotent (a repeat after a crash changes nothing and is
not logged or called back twice); the wake-up is published after it, so a
client woken up always finds the result stored. The jobs are then retired
(out of flight, into their expiry slot), in batches when the caller batches
them (worker/service/retirements.py). Counting happens where the job
leaves its queue (the drain step's script), from the `Finished` record made here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from worker.model.groups import entry_number, group_of
from worker.model.jobs import Job, JobResult, result_event, traced_fields
from worker.model.stores import Stores
from worker.model.wakeups import WakeUp
from worker.ordering.wakeups import Wakeups
from worker.service.apply import JobEnd

log = logging.getLogger("fhir_patch.outcomes")


class Outcomes:
    def __init__(
        self,
        database: Stores,
        wakeups: Wakeups,
        on_finished: Callable[[Job], None],
        clock: Callable[[], datetime],
        retire: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._db = database
        self._wakeups = wakeups
        self._on_finished = on_finished
        self._clock = clock
        self._retire = retire or (lambda job_ids: database.jobs.retire(job_ids, clock()))

    def finish(self, ends: list[JobEnd]) -> list[Job]:
        """Record the outcomes brought about now (one bulk insert), publish their wake-ups (one round trip), owe the
        callbacks of the outcomes recorded now; every job as it ended, in order (a job that had ended before, or
        was cancelled, as it was)."""
        now = self._clock()
        results = [(end.job, end.result, end.text) for end in ends if end.result is not None]
        if not results:
            return [end.job for end in ends]
        failures = _failed_entries([(job, result) for job, result, _ in results])
        if failures:  # before the results: a crash between them leaves a note too many, never one too few
            self._db.groups.note_failures(failures)
        recorded = self._db.jobs.record_outcomes([result_event(job, result, now) for job, result, _ in results])
        finished: dict[str, Job] = {}
        wakeups = []
        for job, result, text in results:
            finished[job.id] = job.finished(result, now)
            wakeups.append(WakeUp(job.id, finished[job.id].state, result, text).encode())
            if job.id in recorded:
                self._recorded(finished[job.id], result)
        self._wakeups.publish(wakeups)
        self._retire([job.id for job, _, _ in results])
        return [finished.get(end.job.id, end.job) for end in ends]

    def _recorded(self, job: Job, result: JobResult) -> None:
        log.info(
            "job %s",
            job.state.value,
            extra={
                "job_id": job.id,
                "key": job.key,
                "status": result.status,
                "version": result.version_id,
                **traced_fields(job),
            },
        )
        if job.callback_url:
            self._on_finished(job)


def _failed_entries(results: list[tuple[Job, JobResult]]) -> dict[str, list[int]]:
    """{group: its entries that failed}, so that a feed's failed lines are found without reading every result."""
    failures: dict[str, list[int]] = {}
    for job, result in results:
        if group_of(job.id) and not result.succeeded:
            failures.setdefault(group_of(job.id), []).append(entry_number(job.id))
    return failures
