"""Celery tasks: thin adapters over worker.service.loop and worker.service.callbacks.

- `fhir_patch.drain(drainer=d)`: run drainer d (worker/service/loop.py): pull ready keys and drain them, until the
  ready list stays empty; a failed drain is retried through the ready list, never by a message of its own.
- `fhir_patch.callback(job_id, attempt, tenant)`: one callback delivery attempt (re-sent with a delay on failure).
The reconciler runs in a thread of each worker's main process (worker/celery/reconciling.py).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from worker.celery.runtime import Runtime, retire_now, runtime_for
from worker.errors import StorageUnavailable
from worker.logs import configure_logging
from worker.model.clock import utc_now
from worker.model.tenants import DEFAULT_TENANT
from worker.settings import Settings
from worker.submission.drains import CALLBACK_TASK, DRAIN_TASK

_INFRASTRUCTURE = (StorageUnavailable,)  # translated where MongoDB and Redis are called (worker/edges.py)


class Tasks:
    """What the Celery tasks do, for one app and its settings (the task functions below only delegate)."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self._app = app
        self._settings = settings

    def send_callback(
        self, job_id: str, attempt: int = 1, countdown: float | None = None, tenant: str = DEFAULT_TENANT
    ) -> None:
        self._app.send_task(CALLBACK_TASK, args=[job_id, attempt, tenant], countdown=countdown)

    def runtime(self) -> Runtime:
        return runtime_for(
            self._settings, self._app, on_finished=lambda job: self.send_callback(job.id, tenant=job.tenant)
        )

    def drain(self, keys: str | list[str] | None = None, drainer: str | None = None) -> int:
        """Run the drain loop (for `keys` given by a message from before the loop pulled keys, then the drainer)."""
        r = self.runtime()
        try:
            return r.loop.run(drainer, [keys] if isinstance(keys, str) else list(keys or []))
        finally:
            retire_now(r.retirements)  # nothing left waiting while this process idles

    def callback(self, job_id: str, attempt: int = 1, tenant: str = DEFAULT_TENANT) -> str:
        r = self.runtime()
        delivery = r.callbacks.deliver(job_id, attempt, utc_now(), tenant)
        if delivery.retry_in is not None:
            r.queues.counters.callback_scheduled(job_id, delivery.retry_in)
            self.send_callback(job_id, attempt + 1, delivery.retry_in, tenant)
        return delivery.state


def register_tasks(app: Celery, settings: Settings) -> Tasks:
    """Register the project's tasks on `app`; the Tasks they delegate to."""
    tasks = Tasks(app, settings)

    def drain(keys: str | list[str] | None = None, drainer: str | None = None) -> int:
        return tasks.drain(keys, drainer)

    def callback(job_id: str, attempt: int = 1, tenant: str = DEFAULT_TENANT) -> str:
        return tasks.callback(job_id, attempt, tenant)

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
