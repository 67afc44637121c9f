"""The reconciler thread of a worker's main process: started when the worker is ready, never stopped.

Each process runs one; a Redis lock lets one pass run at a time across the
deployment (worker/service/reconciler.py says what a pass does).
"""

from __future__ import annotations

import logging
import threading
import time

from worker.celery.tasks import Tasks
from worker.model.clock import utc_now
from worker.ordering.admission import Admission
from worker.service.reconciler import FAILOVER_GRACE_SECONDS, SYNC_CHECK_SECONDS, Reconciler
from worker.settings import Settings
from worker.submission.submitter import Submitter

log = logging.getLogger("fhir_patch.reconciling")


def start_reconciler(tasks: Tasks, settings: Settings) -> None:
    """Start this process's reconciler thread (the deployment runs one pass at a time: a Redis lock)."""
    r = tasks.runtime()
    r.registries.ensure_indexes()
    admission = Admission(r.redis, settings.namespace, settings.max_unfinished_per_client, settings.max_queue_depth)
    # the reconciler's submitter only queues jobs again (`restore`): any registry will do for it
    submitter = Submitter(r.registries.any, r.queues.schedule, admission, r.drains, r.queues.counters.count_group)
    reconciler = Reconciler(
        settings,
        r.registries.by_tenant,
        r.queues,
        submitter,
        r.drains,
        lambda job_id, tenant: tasks.send_callback(job_id, tenant=tenant),
    )
    threading.Thread(
        target=_reconcile_forever,
        args=(reconciler, settings.reconcile_interval_seconds),
        name="reconciler",
        daemon=True,
    ).start()


def _reconcile_forever(reconciler: Reconciler, interval: float) -> None:
    """The failover and sync checks every SYNC_CHECK_SECONDS (so a Redis that lost its data holds new jobs
    briefly), a whole pass every `interval` (or soon after a failover)."""
    next_pass = time.monotonic() + interval
    revival_at = None  # after a failover: when to revive what it left stalled (soon, not at the next pass)
    while True:
        try:
            if reconciler.failed_over(utc_now()):
                log.warning("Redis failed over to another server; stalled keys revived in %s s", FAILOVER_GRACE_SECONDS)
                revival_at = time.monotonic() + FAILOVER_GRACE_SECONDS + SYNC_CHECK_SECONDS
            if revival_at is not None and time.monotonic() >= revival_at:
                revival_at = None
                reconciler.revive_after_failover(utc_now())
            reconciler.sync(utc_now())
            if time.monotonic() >= next_pass:
                next_pass = time.monotonic() + interval
                reconciler.run_once(utc_now())
        except Exception:  # the reconciler must outlive a passing outage of Redis or MongoDB
            log.exception("reconciler pass failed; trying again")
        time.sleep(min(interval, SYNC_CHECK_SECONDS))
