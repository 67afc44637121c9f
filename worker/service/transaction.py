"""Run a transaction job: all its entries or none, atomically with respect to every other job on its resources.

1. Hold: the drain of any of its keys that finds it at the head tries to take
   the leases of all its keys; it succeeds only when the transaction heads every
   one of those queues (queues join transactions atomically, so there is no
   deadlock). Otherwise that key steps aside (parks) and the transaction runs
   from the last key to reach it.
2. Plan every entry in memory, in FHIR order; a failing entry fails the whole.
3. Commit: insert each new version marked with the transaction's id (each still
   a compare-and-set on its resource), then insert the transaction's result:
   that single insert is the commit point. Readers show a marked version only
   once that result exists, so a crash before it leaves nothing visible, and a
   crash after it leaves everything visible. A transaction re-run after a crash
   first removes the marked versions it had written.
4. Record, publish, take it off all its queues, wake the keys that have more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from worker.model.jobs import Job, JobResult, JobState, Start, result_event
from worker.model.planning import Policies, plan_transaction_job
from worker.model.stores import Stores
from worker.model.tenants import split_queue_key
from worker.model.transactions import decode_entries, transaction_keys
from worker.model.wakeups import WakeUp
from worker.ordering import KeyQueues
from worker.schedule.port import leaving
from worker.service.apply import Applier
from worker.settings import Settings

log = logging.getLogger("fhir_patch.transactions")


class TransactionRunner:
    def __init__(
        self,
        settings: Settings,
        database: Stores,
        queues: KeyQueues,
        applier: Applier,
        send_drain: Callable[[str], None],
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._db = database
        self._queues = queues
        self._applier = applier
        self._send_drain = send_drain
        self._clock = clock
        self._policies = Policies(settings.element_policies, settings.client_element_policies)

    def run(self, job: Job, key: str, token: str) -> None:
        """Run the transaction at the head of `key` (whose lease `token` holds), or park the key when another of its
        keys is busy; either way the lease is given up."""
        entries = decode_entries(job.request.body)
        keys = transaction_keys(entries, job.tenant)  # its queues; `resources` are their `Type/id`s
        resources = [split_queue_key(k)[1] for k in keys]
        if not self._queues.schedule.hold(keys, token, job.id, self._settings.lease_seconds):
            self._queues.schedule.park(key, token)
            return
        started = self._db.jobs.start(job.id, self._clock())
        if started is Start.CANCELLED:
            self._db.jobs.cancelled_left([job.id], self._clock())
            self._complete(keys, token, replace(job, state=JobState.CANCELLED))
            return
        if started is Start.AGAIN:
            earlier = self._db.jobs.get(job.id)
            if earlier is not None and earlier.state.final:  # committed (or failed) before a crash: finish the rest
                self._refresh_copies(resources)
                self._complete(keys, token, earlier)
                return
        current = {k: self._db.resources.newest(*k.split("/", 1)) for k in resources}
        if started is Start.AGAIN:  # a crashed attempt may have written marked versions; they never committed
            candidates = [
                (k.split("/", 1)[0], k.split("/", 1)[1], (v.version_id if v else 0) + 1) for k, v in current.items()
            ]
            self._db.resources.remove_uncommitted(job.id, candidates)
        result, versions = plan_transaction_job(job, entries, current, self._clock(), self._policies)
        now = self._clock()
        self._applier.commit.transaction(
            [(current[v.key], v) for v in versions], result_event(job, result, now), result.succeeded
        )
        finished = job.finished(result, now)
        # The waiting API reads the whole result from MongoDB: the wake-up carries the status alone.
        self._queues.wakeups.publish([WakeUp(job.id, finished.state, JobResult(result.status), None).encode()])
        log.info(
            "transaction %s", finished.state.value, extra={"job_id": job.id, "keys": len(keys), "status": result.status}
        )
        self._complete(keys, token, finished)

    def _refresh_copies(self, resources: list[str]) -> None:
        latest = [self._db.resources.latest(*key.split("/", 1)) for key in resources]
        self._applier.commit.copy([version for version in latest if version is not None])

    def _complete(self, keys: list[str], token: str, job: Job) -> None:
        """Take the ended transaction off all its queues, counted once (`leaving`), and wake the keys with more."""
        for key in self._queues.schedule.complete_transaction(keys, token, leaving(job.id, job), time.time()):
            self._send_drain(key)
