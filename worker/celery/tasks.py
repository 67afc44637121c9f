"""Celery tasks: thin adapters over worker.service.drain and worker.service.callbacks.

- `fhir_patch.drain(key)`: drain one resource key (re-sent while jobs remain).
- `fhir_patch.callback(job_id)`: one callback delivery attempt (re-sent with a delay on failure).
The reconciler runs in a thread of each worker's main process (worker/celery/reconciling.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from worker.celery.runtime import Runtime, runtime_for, worker_id
from worker.errors import StorageUnavailable
from worker.logs import configure_logging
from worker.model.clock import utc_now
from worker.service.drain import MAX_JOB_ATTEMPTS
from worker.settings import Settings
from worker.submission.drains import CALLBACK_TASK, DRAIN_TASK

_INFRASTRUCTURE = (StorageUnavailable,)  # translated where MongoDB and Redis are called (worker/edges.py)

log = logging.getLogger("fhir_patch.tasks")


class Tasks:
    """What the Celery tasks do, for one app and its settings (the task functions below only delegate)."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self._app = app
        self._settings = settings

    def send_drain(self, key: str, countdown: float | None = None) -> None:
        self._app.send_task(DRAIN_TASK, args=[key], countdown=countdown)

    def send_callback(self, job_id: str, attempt: int = 1, countdown: float | None = None) -> None:
        self._app.send_task(CALLBACK_TASK, args=[job_id, attempt], countdown=countdown)

    def runtime(self) -> Runtime:
        return runtime_for(
            self._settings, on_finished=lambda job: self.send_callback(job.id), send_drain=self.send_drain
        )

    def drain(self, keys: str | list[str]) -> int:
        """Drain one key, or several (a feed's intake sends one message for a block of keys)."""
        r = self.runtime()
        processed, idle = 0, 0
        batch = [keys] if isinstance(keys, str) else keys
        r.queues.leases.taken(
            batch, worker_id(), time.time()
        )  # while this process lives, the reconciler leaves them be
        for key in batch:
            try:
                drained = r.drainer.drain(key)
            except _INFRASTRUCTURE:
                raise  # Celery retries the message with backoff; the key stays marked as taken by this process
            except Exception:  # a job that makes the drain fail: retried with backoff, then failed alone
                self._failed_drain(r, key)
                continue
            if drained.held_elsewhere:
                r.queues.leases.untake(key, worker_id())
            processed += drained.processed
            idle += drained.processed == 0
            if drained.more:
                r.queues.leases.reschedule(key, time.time())
                self.send_drain(key)
        if idle:
            r.queues.counters.count("idle_drains", idle)
        return processed

    def _failed_drain(self, r: Runtime, key: str) -> None:
        job_id, _ = r.queues.leases.head(key)
        attempts = r.queues.leases.attempt(job_id) if job_id else 0
        log.exception("drain failed", extra={"key": key, "job_id": job_id, "attempt": attempts})
        if job_id and attempts >= MAX_JOB_ATTEMPTS:
            try:
                r.drainer.give_up(key, attempts)
            except Exception:  # even its failure could not be recorded: try again at the next attempt
                log.exception("could not give the job up", extra={"key": key, "job_id": job_id})
        r.queues.leases.reschedule(key, time.time())
        self.send_drain(key, countdown=min(30.0, 0.5 * 2**attempts))

    def callback(self, job_id: str, attempt: int = 1) -> str:
        r = self.runtime()
        delivery = r.callbacks.deliver(job_id, attempt, utc_now())
        if delivery.retry_in is not None:
            r.queues.counters.callback_scheduled(job_id, delivery.retry_in)
            self.send_callback(job_id, attempt + 1, delivery.retry_in)
        return delivery.state


def register_tasks(app: Celery, settings: Settings) -> Tasks:
    """Register the project's tasks on `app`; the Tasks they delegate to."""
    tasks = Tasks(app, settings)

    def drain(keys: str | list[str]) -> int:
        return tasks.drain(keys)

    def callback(job_id: str, attempt: int = 1) -> str:
        return tasks.callback(job_id, attempt)

    def _logging(**_: Any) -> None:
        configure_logging(settings.log_level)

    # Celery's decorators are untyped; applied as calls so the functions above stay typed.
    app.task(name=DRAIN_TASK, autoretry_for=_INFRASTRUCTURE, retry_backoff=1, retry_backoff_max=30, max_retries=None)(
        drain
    )
    app.task(
        name=CALLBACK_TASK, autoretry_for=_INFRASTRUCTURE, retry_backoff=1, retry_backoff_max=60, max_retries=None
    )(callback)
    setup_logging.connect(_logging, weak=False)
    return tasks
