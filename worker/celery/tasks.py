"""Celery tasks: thin adapters over worker.service.drain and worker.service.callbacks.

- `fhir_patch.drain(drainer=d)`: run drainer d: pull keys from the ready list (worker/ordering/ready.py) and drain
  each, until the list stays empty for LINGER_SECONDS; after DRAINER_SECONDS the same drainer goes on from a new
  message, so callbacks waiting in the broker get their turn and no task nears Celery's time limit.
- `fhir_patch.drain(keys)`: drain the given keys (a retry after a drain failed, sent with a delay).
- `fhir_patch.callback(job_id)`: one callback delivery attempt (re-sent with a delay on failure).
The reconciler runs in a thread of each worker's main process (worker/celery/reconciling.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from worker.celery.runtime import Runtime, retire_now, runtime_for, worker_id
from worker.errors import StorageUnavailable
from worker.logs import configure_logging
from worker.model.clock import utc_now
from worker.service.drain import MAX_JOB_ATTEMPTS, Drained
from worker.settings import Settings
from worker.submission.drains import CALLBACK_TASK, DRAIN_TASK

LINGER_SECONDS = 0.5  # a drainer waits this long for the next key before it retires (then a message starts one)
DRAINER_SECONDS = 5.0  # then the drainer hands over to a new message of its own
_INFRASTRUCTURE = (StorageUnavailable,)  # translated where MongoDB and Redis are called (worker/edges.py)

log = logging.getLogger("fhir_patch.tasks")


class Tasks:
    """What the Celery tasks do, for one app and its settings (the task functions below only delegate)."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self._app = app
        self._settings = settings

    def send_drain(self, key: str, countdown: float | None = None) -> None:
        """Offer `key` to the drainers now, or after `countdown` seconds in a message of its own."""
        if countdown is None:
            self.runtime().drains.send([key])
        else:
            self._app.send_task(DRAIN_TASK, args=[key], countdown=countdown)

    def send_callback(self, job_id: str, attempt: int = 1, countdown: float | None = None) -> None:
        self._app.send_task(CALLBACK_TASK, args=[job_id, attempt], countdown=countdown)

    def runtime(self) -> Runtime:
        return runtime_for(self._settings, self._app, on_finished=lambda job: self.send_callback(job.id))

    def drain(self, keys: str | list[str] | None = None, drainer: str | None = None) -> int:
        """Drain the given keys, then, for a drainer, what the ready list offers; the jobs processed."""
        r = self.runtime()
        given = [keys] if isinstance(keys, str) else list(keys or [])
        if given:
            r.queues.leases.taken(given, worker_id(), time.time())  # while this process lives, the reconciler waits
        try:
            processed = self._drain_keys(r, given)
            if drainer is not None:
                processed += self._pull(r, drainer)
        finally:
            retire_now(r.retirements)  # nothing left waiting while this process idles
        return processed

    def _pull(self, r: Runtime, drainer: str) -> int:
        """Drainer `drainer`: first the keys it held when its process died (its message came back), then the items
        of the ready list, until none comes for LINGER_SECONDS (it retires) or DRAINER_SECONDS passed."""
        started, ready, me = time.monotonic(), r.queues.ready, worker_id()
        resumed = ready.resumed(drainer)
        if resumed:
            r.queues.leases.taken(resumed, me, time.time())
        processed = self._drain_keys(r, resumed)
        while time.monotonic() - started < DRAINER_SECONDS:
            items = ready.take(drainer, me, time.time())
            if not items:
                item = ready.wait(LINGER_SECONDS)
                items = ready.take(drainer, me, time.time(), "retire", item)
                if not items:
                    return processed  # retired: no longer counted, so the next offer starts a drainer
            processed += self._drain_keys(r, [item[0] for item in items if len(item) == 1])
            for group in (item for item in items if len(item) > 1):  # a transaction's keys, drained in turn
                processed += sum(self._drain_keys(r, [key]) for key in group)
        ready.hand_over(drainer, time.time())
        r.drains.start(drainer)
        return processed

    def _drain_keys(self, r: Runtime, batch: list[str]) -> int:
        batch = list(dict.fromkeys(batch))
        together = self._drained_together(r, batch) if len(batch) > 1 else {}
        processed, idle = 0, 0
        for key in batch:
            drained = together.get(key) or self._drained_alone(r, key)
            if drained is None:
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

    def _drained_together(self, r: Runtime, keys: list[str]) -> dict[str, Drained]:
        try:
            return r.drainer.drain_together(keys)
        except _INFRASTRUCTURE:
            raise  # Celery retries the message with backoff
        except Exception:  # drained one by one instead, where a job that makes its drain fail is found alone
            log.exception("keys drained together failed; draining them one by one", extra={"keys": len(keys)})
            return {}

    def _drained_alone(self, r: Runtime, key: str) -> Drained | None:
        try:
            return r.drainer.drain(key)
        except _INFRASTRUCTURE:
            raise  # Celery retries the message with backoff; the key stays marked as taken by this process
        except Exception:  # a job that makes the drain fail: retried with backoff, then failed alone
            self._failed_drain(r, key)
            return None

    def _failed_drain(self, r: Runtime, key: str) -> None:
        job_id, _ = r.queues.leases.head(key)
        attempts = r.queues.leases.attempt(job_id, f"failed:{uuid.uuid4().hex}") if job_id else 0
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

    def drain(keys: str | list[str] | None = None, drainer: str | None = None) -> int:
        return tasks.drain(keys, drainer)

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
