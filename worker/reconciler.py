"""The reconciler: make sure everything accepted reaches a final state, and keep storage tidy.

Runs periodically in every worker process, one at a time across the
deployment (a Redis lock). Each pass:

1. revives stalled keys: jobs queued, no lease held, and no drain message
   that can still arrive: the message was taken by a worker process whose
   heartbeat stopped (killed: its message is stuck until the broker's
   visibility timeout), or it was sent longer than a lease ago while the broker
   holds no message at all, or longer than the visibility timeout ago. A key
   whose message merely waits in a backlog is never revived, so a backlog
   cannot make itself worse; revivals are at most MAX_REVIVALS per pass, and a
   revived key counts as sent again (no second revival before it is due);
2. restores lost jobs: jobs MongoDB holds as accepted or running, older than
   a grace period, that no Redis queue holds (Redis lost its data) -> put
   them back at the head of their key's queue, oldest first;
3. resends owed callbacks whose retry message was lost;
4. removes finished jobs older than the retention.
Step 1 reads Redis only and runs every pass; steps 2-4 scan MongoDB and run
every `MONGODB_PASS_EVERY` passes.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis

from worker.ordering import KeyQueues
from worker.ordering.key_queues import KeyState
from worker.settings import Settings
from worker.storage import Database
from worker.storage.group_store import Group

log = logging.getLogger("fhir_patch.reconciler")

MONGODB_PASS_EVERY = 10
MAX_REVIVALS = 500


@dataclass(frozen=True)
class Pass:
    revived_keys: int = 0
    restored_jobs: int = 0
    callbacks_resent: int = 0
    expired_jobs: int = 0
    skipped: bool = False


class Reconciler:
    def __init__(self, settings: Settings, database: Database, client: "redis.Redis", queues: KeyQueues,
                 send_drain: Callable[[str], None], send_callback: Callable[[str], None]) -> None:
        self._settings = settings
        self._db = database
        self._redis = client
        self._queues = queues
        self._send_drain = send_drain
        self._send_callback = send_callback
        self._lock = f"{settings.namespace}:reconciler"
        self._passes = 0

    @property
    def grace(self) -> timedelta:
        # A job is recorded in MongoDB a moment before it is queued in Redis; never mistake that moment for a loss.
        return timedelta(seconds=max(2.0, self._settings.reconcile_interval_seconds))

    def run_once(self, now: datetime) -> Pass:
        hold_ms = max(100, int(self._settings.reconcile_interval_seconds * 900))
        if not self._redis.set(self._lock, secrets.token_hex(8), nx=True, px=hold_ms):
            return Pass(skipped=True)
        self._passes += 1
        revived = self._revive_stalled_keys(now)
        if self._passes % MONGODB_PASS_EVERY != 1:
            return Pass(revived)
        expired_before = now - timedelta(seconds=self._settings.job_retention_seconds)
        for group in self._db.groups.expire(expired_before, now, self._group_has_ended):
            self._db.jobs.remove(group.entry_ids())
        return Pass(revived, self._restore_lost_jobs(now), self._resend_callbacks(now), self._db.jobs.expire(expired_before))

    def _group_has_ended(self, group: Group) -> bool:
        if group.total is None:
            return False
        reads = len(group.reads or {})
        counts = self._queues.group_counts(group.id)
        if not counts:  # Redis lost the counters: look the outcomes up
            return sum(1 for _, outcome in self._db.jobs.outcomes(group.entry_ids()) if outcome is None) <= reads
        return sum(counts.get(k, 0) for k in ("rejected", "applied", "failed", "cancelled")) + reads >= group.total

    def _revive_stalled_keys(self, now: datetime) -> int:
        revived = 0
        broker_idle = self._queues.broker_backlog() == 0
        for key in self._queues.active_keys():
            if revived >= MAX_REVIVALS:
                break
            if self._stalled(self._queues.state(key), now.timestamp(), broker_idle):
                self._queues.reschedule(key, now.timestamp())
                self._send_drain(key)
                revived += 1
        if revived:
            self._queues.count("revived", revived)
            log.warning("revived stalled keys", extra={"count": revived})
        return revived

    def _stalled(self, state: KeyState, now: float, broker_idle: bool) -> bool:
        """Jobs wait, no drain holds the key, and its drain message cannot arrive any more."""
        if not state.depth or state.leased:
            return False
        age = now - state.since
        if state.message is None:  # no message outstanding (a transaction parked the key): after a lease
            return age > self._settings.lease_seconds
        if state.taken_by is not None:  # taken by a process: lost only if that process is gone
            return age > self._settings.lease_seconds and not self._queues.alive(state.taken_by)
        # Sent and not taken: it waits in the broker, unless the broker is empty (then it was lost on the way).
        return (broker_idle and age > self._settings.lease_seconds) or age > self._settings.visibility_timeout_seconds

    def _restore_lost_jobs(self, now: datetime) -> int:
        lost: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for job in self._db.jobs.unfinished_before(now - self.grace):
            if self._queues.position(job.key, job.id) is None:
                lost[job.key].append((job.id, job.to_payload()))
        for key, jobs in lost.items():
            self._queues.restore(key, jobs, now.timestamp())
            self._send_drain(key)
        restored = sum(len(jobs) for jobs in lost.values())
        if restored:
            log.warning("restored jobs Redis had lost", extra={"count": restored, "keys": len(lost)})
        return restored

    def _resend_callbacks(self, now: datetime) -> int:
        overdue = now - timedelta(seconds=max(30.0, 2 * self._settings.reconcile_interval_seconds))
        resent = 0
        for job_id in self._db.jobs.callbacks_owed(overdue):
            if not self._queues.callback_is_scheduled(job_id):
                self._queues.callback_scheduled(job_id, 0)
                self._send_callback(job_id)
                resent += 1
        return resent
