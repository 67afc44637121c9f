"""The reconciler: make sure everything accepted reaches a final state, and keep storage tidy.

Runs periodically in every worker process, one at a time across the
deployment (a Redis lock). Each pass:

1. revives stalled keys: jobs queued, no lease held, and no drain that can
   still come: the key was taken by a worker process whose heartbeat stopped
   (killed), or it was offered longer than a lease ago while the ready list is
   empty (so it was lost on the way), or longer than the visibility timeout
   ago. A key that merely waits in a backlog is never revived, so a backlog
   cannot make itself worse; revivals are at most MAX_REVIVALS per pass, and a
   revived key counts as offered again (no second revival before it is due).
   Then it makes sure drainers serve what the ready list holds (a drainer whose
   process died stops counting after a lease);
2. restores lost jobs: jobs MongoDB holds in flight, older than a grace
   period, that no Redis queue holds (an API process died between recording a
   job and queuing it, so no client was told it was accepted) -> queue them;
3. resends owed callbacks whose retry message was lost;
4. removes finished jobs older than the retention.
Step 1 reads Redis only and runs every pass; steps 2-4 scan MongoDB and run
every `MONGODB_PASS_EVERY` passes.

Apart from the passes, `failed_over` runs every SYNC_CHECK_SECONDS (after a Sentinel failover, what the old
master's lost writes left stalled is revived FAILOVER_GRACE_SECONDS later: `revive_after_failover`), and so
does `sync`: when Redis lost its
data (its sync marker is gone, worker/schedule/port.py), it rebuilds every
key's queue from the jobs MongoDB holds in flight, in acceptance order, then
appends the jobs that arrived meanwhile and sets the marker again.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from worker.errors import StorageUnavailable
from worker.model.groups import Group
from worker.model.stores import Stores, group_outcomes
from worker.model.tenants import DEFAULT_TENANT
from worker.ordering import KeyQueues
from worker.schedule import KeyView, MarkKind
from worker.settings import Settings
from worker.submission.drains import DrainSender
from worker.submission.submitter import Submitter, keys_of

log = logging.getLogger("fhir_patch.reconciler")

MONGODB_PASS_EVERY = 10
MAX_REVIVALS = 500
SYNC_CHECK_SECONDS = 0.5
LOST_BLOCK = 500
RESTORE_LOCK_MS = 600_000
FAILOVER_GRACE_SECONDS = 2.0
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Pass:
    revived_keys: int = 0
    restored_jobs: int = 0
    callbacks_resent: int = 0
    expired_jobs: int = 0
    skipped: bool = False


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        database: Stores | Mapping[str, Stores],
        queues: KeyQueues,
        submitter: Submitter,
        drains: DrainSender,
        send_callback: Callable[[str, str], None],
    ) -> None:
        """`database`: the registry of each tenant (or the default tenant's alone); `send_callback(job id, tenant)`;
        the Redis side (queues, locks, revivals) is the deployment's, one for every tenant."""
        self._settings = settings
        self._registries = database if isinstance(database, Mapping) else {DEFAULT_TENANT: database}
        self._queues = queues
        self._submitter = submitter
        self._drains = drains
        self._send_callback = send_callback
        self._lock = queues.keys.reconciler_lock
        self._passes = 0
        self._server_since = 0.0  # when the Redis server answering took over, as last seen (failed_over)

    @property
    def grace(self) -> timedelta:
        # A job is recorded in MongoDB a moment before it is queued in Redis; never mistake that moment for a loss.
        return timedelta(seconds=max(2.0, self._settings.reconcile_interval_seconds))

    def run_once(self, now: datetime) -> Pass:
        hold_ms = max(100, int(self._settings.reconcile_interval_seconds * 900))
        if not self._queues.schedule.lock(self._lock, hold_ms):
            return Pass(skipped=True)
        self._passes += 1
        revived = self._revive_stalled_keys(now)
        if self._passes % MONGODB_PASS_EVERY != 1:
            return Pass(revived)
        expired_before = now - timedelta(seconds=self._settings.job_retention_seconds)
        restored = resent = expired = 0
        for tenant, db in self._registries.items():
            for group in db.groups.expire(expired_before, now, functools.partial(self._group_has_ended, db)):
                db.jobs.remove(group.entry_ids())
            restored += self._restore_lost_jobs(db, now)
            resent += self._resend_callbacks(tenant, db, now)
            expired += db.jobs.expire(expired_before)
        return Pass(revived, restored, resent, expired)

    def _group_has_ended(self, db: Stores, group: Group) -> bool:
        if group.total is None:
            return False
        reads = len(group.reads or {})
        counts = self._queues.counters.group_counts(group.id)
        if not counts:  # Redis lost the counters: look the outcomes up
            return sum(1 for _, outcome in group_outcomes(db.groups, db.jobs, group) if outcome is None) <= reads
        return sum(counts.get(k, 0) for k in ("rejected", "applied", "failed", "cancelled")) + reads >= group.total

    def _revive_stalled_keys(self, now: datetime) -> int:
        revived: list[str] = []
        nothing_waits = self._queues.schedule.waiting() == 0
        failed_over_at = self._queues.schedule.served_since(now.timestamp())
        if failed_over_at:  # drainers running before a failover lost their messages with the old master
            self._queues.schedule.drainers_gone_before(failed_over_at)
        for key in self._queues.schedule.active_keys():
            if len(revived) >= MAX_REVIVALS:
                break
            view = self._queues.schedule.view(key)
            if self._stale_lease(view, now.timestamp(), failed_over_at):
                self._break_lease(key)
                view = self._queues.schedule.view(key)
            if self._stalled(view, now.timestamp(), nothing_waits, failed_over_at):
                self._queues.schedule.reoffer(key, now.timestamp())
                revived.append(key)
        self._drains.send(revived)  # also when none: drainers for what waits, if those counted on died
        if revived:
            self._queues.counters.count("revived", len(revived))
            log.warning("revived stalled keys", extra={"count": len(revived)})
        return len(revived)

    def _stale_lease(self, key: KeyView, now: float, failed_over_at: float) -> bool:
        """A lease last set before a failover and not renewed since: the promoted replica's copy of a lease that
        its holder gave up (or renewed) on the old master, in writes that were not replicated. A drain that holds
        the key renews its lease at every step, so after FAILOVER_GRACE_SECONDS an unrenewed one is stale."""
        if not (key.leased and key.depth and failed_over_at) or now - failed_over_at <= FAILOVER_GRACE_SECONDS:
            return False
        set_at = now - (self._settings.lease_seconds - key.lease_left)
        return key.lease_left > 0 and set_at < failed_over_at

    def _break_lease(self, key: str) -> None:
        held = self._queues.schedule.lease_holder(key)
        if held is not None:  # released by its token, so a lease taken meanwhile is left alone
            self._queues.schedule.release(key, held[1])
            log.warning("a lease from before the Redis failover was given up", extra={"key": key})

    def _stalled(self, key: KeyView, now: float, nothing_waits: bool, failed_over_at: float = 0.0) -> bool:
        """Jobs wait, no drain holds the key, and no drain of it can come any more.

        A mark set before a Redis failover (`failed_over_at`) may stand for a drain that the promoted replica
        never heard of: its ready item or its release was lost with the old master, and the process it names
        may be alive and busy elsewhere. Still unleased FAILOVER_GRACE_SECONDS after the failover was seen, it is
        revived: a drain that does hold the key renews its lease on the new master at its next step, and one
        that was mid-step meets the other drain's lease and stops, as when a paused worker comes back."""
        if not key.depth or key.leased:
            return False
        age, lease = now - key.since, self._settings.lease_seconds
        if key.mark is None:  # no drain outstanding (a transaction parked the key): after a lease
            return age > lease
        if key.since < failed_over_at:  # a drain that holds the key renews its lease within a step: a moment
            return now - failed_over_at > min(lease, FAILOVER_GRACE_SECONDS)
        if key.mark.kind is MarkKind.TAKEN:  # taken by a process: lost only if that process is gone
            return age > lease and not self._queues.schedule.alive(key.mark.worker)
        # Offered (or retrying, and due `since`): it waits on the ready list, unless nothing waits there.
        return (nothing_waits and age > lease) or age > self._settings.visibility_timeout_seconds

    def _restore_lost_jobs(self, db: Stores, now: datetime) -> int:
        """Queue the jobs in flight that no queue holds. Queued is asked first, a block at a time in one round trip,
        and only then is the job read: a job leaves its queue only after its outcome is recorded, so one not
        queued and then still not final is truly lost (read the other way round, one finishing in between would
        look lost and be queued again)."""
        restored = 0
        ids = list(db.jobs.in_flight_before(now - self.grace))
        for start in range(0, len(ids), LOST_BLOCK):
            for job_id in self._queues.schedule.not_queued(ids[start : start + LOST_BLOCK]):
                job = db.jobs.get(job_id)
                if job is None:
                    continue
                if job.state.final:  # its retirement was lost with its worker: retire it
                    db.jobs.retire([job.id], now)
                    continue
                self._submitter.restore(job, keys_of(job))
                restored += 1
        if restored:
            log.warning("queued jobs no queue held", extra={"count": restored})
        return restored

    def revive_after_failover(self, now: datetime) -> int:
        """Step 1 of a pass alone, outside the pass's deployment-wide lock (the promoted replica holds the lock of
        the last pass, so a pass would wait out the interval): revivals are safe to repeat, so two processes
        doing this at once offer a key twice at worst."""
        return self._revive_stalled_keys(now)

    def failed_over(self, now: datetime) -> bool:
        """Whether another Redis server took over since the last look (a Sentinel failover): then
        `revive_after_failover` should come FAILOVER_GRACE_SECONDS later, not the next pass at its interval."""
        since = self._queues.schedule.served_since(now.timestamp())
        changed, self._server_since = since > self._server_since, since
        return changed

    def sync(self, now: datetime) -> int:
        """For each tenant whose Redis queues lost their data (its marker is gone), rebuild every queue from its
        registry in acceptance order; the jobs put back. A registry that cannot be read is left for the next
        check: its arrivals stay held, and the other tenants are restored meanwhile."""
        schedule = self._queues.schedule
        lagging = [tenant for tenant in self._registries if not schedule.synced(tenant)]
        if not lagging or not schedule.lock(self._queues.keys.restore_lock, RESTORE_LOCK_MS):
            return 0
        restored = 0
        try:
            for tenant in lagging:
                try:
                    restored += self._sync_tenant(tenant, self._registries[tenant], now)
                except StorageUnavailable as exc:
                    log.warning("community %s not restored yet: %s", tenant, exc, extra={"tenant": tenant})
        finally:
            schedule.unlock(self._queues.keys.restore_lock)
        return restored

    def _sync_tenant(self, tenant: str, db: Stores, now: datetime) -> int:
        schedule = self._queues.schedule
        by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for job in db.jobs.unfinished_before(FAR_FUTURE):  # oldest first: acceptance order
            for key in keys_of(job):
                by_key[key].append((job.id, job.to_payload()))
        busy, to_drain = False, []
        for key, jobs in by_key.items():
            rebuilt = schedule.rebuild(key, jobs, now.timestamp())
            busy |= rebuilt is None  # a drain holds it: the marker waits for the next check
            if rebuilt:
                to_drain.append(key)
        if not busy:
            to_drain += schedule.finish_sync(tenant, now.timestamp())
        # Only now: a job drained before the held ones were appended could finish and be appended again.
        self._drains.send(list(dict.fromkeys(to_drain)))
        if busy:
            return 0
        restored = sum(len(jobs) for jobs in by_key.values())
        log.warning(
            "Redis was out of sync: queues rebuilt from MongoDB",
            extra={"jobs": restored, "keys": len(by_key), "tenant": tenant},
        )
        return restored

    def _resend_callbacks(self, tenant: str, db: Stores, now: datetime) -> int:
        overdue = now - timedelta(seconds=max(30.0, 2 * self._settings.reconcile_interval_seconds))
        resent = 0
        for job_id in db.jobs.callbacks_owed(overdue):
            if not self._queues.counters.callback_is_scheduled(job_id):
                self._queues.counters.callback_scheduled(job_id, 0)
                self._send_callback(job_id, tenant)
                resent += 1
        return resent
