"""Drain resource keys: one lease loop for one key or many, one job at a time per key, in accepted order.

A step, for every key held: its first jobs are applied (worker/service/apply.py: planned, committed, each
job's end decided), their ends recorded (outcomes.py: result, wake-up, callback), and only then taken off the
queue, in the same Redis step that renews the lease and peeks at what comes next. Single jobs of many keys are
one batch; a key with more queued is its own; a transaction at a head runs alone (transaction.py). A crash
between any two steps repeats at most the steps after the last durable one, and the start gate and the job-id
check on versions make a repeat harmless.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from worker.errors import StorageUnavailable
from worker.model.clock import utc_now
from worker.model.jobs import Action, Job, JobResult
from worker.model.stores import Stores
from worker.model.tenants import DEFAULT_TENANT, split_queue_key
from worker.ordering import KeyQueues
from worker.ordering.commit import Commit
from worker.schedule import Heads, Step
from worker.schedule.port import leaving
from worker.service.apply import Applier, JobEnd
from worker.service.outcomes import Outcomes
from worker.service.transaction import TransactionRunner
from worker.settings import Settings

log = logging.getLogger("fhir_patch.drain")

MAX_JOBS_PER_DRAIN = 200  # then hand the key back to the queue, so one busy resource cannot hold a worker
BATCH = 50  # jobs of one key applied together: one bulk insert each of gates, versions and results
MAX_JOB_ATTEMPTS = 3  # drains that died (or failed) at the same head job before that job fails alone


@dataclass(frozen=True)
class Lane:
    """One tenant's registry and the services over it: a key's jobs are planned, committed and recorded in the
    registry of the tenant its queue key names."""

    db: Stores
    applier: Applier
    outcomes: Outcomes
    transactions: TransactionRunner


@dataclass(frozen=True)
class Drained:
    processed: int
    more: bool  # jobs remain: a new drain message must be sent
    # Another drain holds the key's lease, or this one lost it: that drain (or, if none, the reconciler) goes on, so
    # this process's mark on the key goes (else a live process would seem to drain it, and nothing would revive it).
    held_elsewhere: bool = False


class Drainer:
    """Drains resource keys: the lease loop around Applier (plan, commit), Outcomes (record, publish) and
    TransactionRunner."""

    def __init__(
        self,
        settings: Settings,
        database: Stores | Mapping[str, Stores],
        queues: KeyQueues,
        on_finished: Callable[[Job], None] = lambda job: None,
        clock: Callable[[], datetime] = utc_now,
        send_drain: Callable[[str], None] = lambda key: None,
        holder: str = "",
        holder_gone: Callable[[str], bool] = lambda holder: False,
        retire: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        """`database`: the registry of each tenant (or the default tenant's alone). `holder` names this process in
        the leases it takes; `holder_gone(h)` says whether the process named `h` is known to be dead (its leases
        are then taken over at once instead of waiting for them to expire); `retire(tenant, ids)` takes finished
        jobs out of flight (at once by default; a worker batches them)."""
        self._settings = settings
        self._holder = holder
        self._holder_gone = holder_gone
        self._schedule = queues.schedule
        self._unreleased: dict[str, str] = {}  # key -> token of leases a Redis outage kept us from giving up
        self._unreleased_lock = threading.Lock()  # the drain thread adds, the heartbeat thread gives up
        registries = database if isinstance(database, Mapping) else {DEFAULT_TENANT: database}

        def lane(tenant: str, db: Stores) -> Lane:
            applier = Applier(settings, db, Commit(db, queues.copies, tenant), clock)
            retiring = None if retire is None else (lambda ids: retire(tenant, ids))
            outcomes = Outcomes(db, queues.wakeups, on_finished, clock, retiring)
            return Lane(db, applier, outcomes, TransactionRunner(settings, db, queues, applier, send_drain, clock))

        self._lanes = {tenant: lane(tenant, db) for tenant, db in registries.items()}

    def _lane(self, key: str) -> Lane:
        """The lane of a queue key's tenant; one no longer configured is an outage for its keys (they wait)."""
        tenant = split_queue_key(key)[0]
        if tenant not in self._lanes:
            raise StorageUnavailable(f"No registry is configured for the community {tenant!r} (FHIR_PATCH_TENANTS)")
        return self._lanes[tenant]

    def drain(self, key: str) -> Drained:
        """Drain one key (see drain_together)."""
        return self._drain([key])[key]

    def drain_together(self, keys: list[str]) -> dict[str, Drained]:
        """Drain several keys together (see _drain)."""
        return self._drain(keys)

    def _drain(self, keys: list[str]) -> dict[str, Drained]:
        """Apply the keys' queued jobs while holding their leases (taken, renewed and in the end given up in the
        same Redis steps that peek and complete jobs), a step at a time for all of them: one command each for
        gates, versions and results, one Redis round trip each for leases, copies and wake-ups. A key whose lease
        another holds is left to it (or taken over, when that holder is known dead)."""
        keys = list(dict.fromkeys(keys))  # one lease per key, even if it was offered twice
        tokens = {key: self._schedule.new_token(self._holder) for key in keys}
        done: dict[str, Drained] = {}
        processed = dict.fromkeys(keys, 0)
        try:
            first = [Step(key, tokens[key], [], acquire=True) for key in keys]
            heads = dict(zip(keys, self._next_jobs(first)))
            for key in [key for key, held in heads.items() if held is None]:
                taken = self._take_over(key)
                if taken is None:  # its holder drains it (or the reconciler revives it when the lease expires)
                    done[key] = Drained(0, False, held_elsewhere=True)
                    del heads[key]
                else:
                    tokens[key], heads[key] = taken, self._next_jobs([Step(key, taken, [])])[0]
            while heads:
                heads = self._step(self._going_on(heads, tokens, processed, done), tokens, processed, done)
        except BaseException:
            self._give_up({key: tokens[key] for key in keys if key not in done})
            raise
        return done

    def _give_up(self, leases: dict[str, str]) -> list[str]:
        """Release leases now, so a retry starts at once instead of waiting them out; those Redis cannot take now
        are kept for `release_pending`. The keys that still have jobs."""
        more = []
        for key, token in leases.items():
            try:
                if self._schedule.release(key, token):
                    more.append(key)
            except StorageUnavailable:
                with self._unreleased_lock:
                    self._unreleased[key] = token
        return more

    def release_pending(self) -> list[str]:
        """Give up the leases a Redis outage kept this process from releasing (after a Sentinel failover the
        promoted replica still holds them, and they would stall their keys for a whole lease); the keys that
        still have jobs, to be offered again. A lease taken by another since is left alone (the token is ours).
        The process's heartbeat thread calls it (worker/celery/runtime.py)."""
        with self._unreleased_lock:
            pending, self._unreleased = self._unreleased, {}
        return self._give_up(pending)

    def _next_jobs(self, steps: list[Step]) -> list[Heads | None]:
        return self._schedule.next_jobs(steps, self._settings.lease_seconds, BATCH)

    def _going_on(
        self,
        heads: dict[str, Heads | None],
        tokens: dict[str, str],
        processed: dict[str, int],
        done: dict[str, Drained],
    ) -> dict[str, Heads]:
        """The keys that go on; the others are done: lease lost, queue emptied, or their share of jobs drained."""
        going: dict[str, Heads] = {}
        for key, held in heads.items():
            if held is None:
                log.warning("lease lost; another worker continues", extra={"key": key, "processed": processed[key]})
                done[key] = Drained(processed[key], False, held_elsewhere=True)
            elif held.released:
                done[key] = Drained(processed[key], False)
            elif processed[key] >= MAX_JOBS_PER_DRAIN:
                done[key] = Drained(processed[key], self._schedule.release(key, tokens[key]))
            else:
                going[key] = held
        return going

    def _step(
        self, heads: dict[str, Heads], tokens: dict[str, str], processed: dict[str, int], done: dict[str, Drained]
    ) -> dict[str, Heads | None]:
        """One step of the keys: a transaction at a head runs (and gives its key up); the other keys' first jobs are
        applied (single jobs of many keys as one batch, a key with more queued as its own), recorded and taken off;
        the heads of the keys that go on."""
        queued = self._queued(heads)
        for key, jobs in list(queued.items()):
            if jobs and jobs[0].request.action == Action.TRANSACTION:
                self._lane(key).transactions.run(jobs[0], key, tokens[key])  # ran (and woke its keys) or parked the key
                done[key] = Drained(processed[key], False)
                del queued[key]
        ends = self._ends({key: jobs for key, jobs in queued.items() if jobs}, heads)
        steps = []
        for key, jobs in queued.items():
            ended = ends.get(key)
            if not jobs:  # the job at its head is not found (expired?): taken off
                log.warning("queued job not found (expired?)", extra={"job_id": heads[key].jobs[0][0]})
                steps.append(Step(key, tokens[key], [leaving(heads[key].jobs[0][0], None)]))
            elif ended is None:
                log.warning("lease lost; another worker continues", extra={"key": key})
                done[key] = Drained(processed[key], False, held_elsewhere=True)
            else:
                processed[key] += len(ended)
                steps.append(Step(key, tokens[key], [leaving(job.id, job) for job in ended]))
        after = self._next_jobs(steps) if steps else []
        return {step.key: held for step, held in zip(steps, after)}

    def _ends(self, queued: dict[str, list[Job]], heads: dict[str, Heads]) -> dict[str, list[Job] | None]:
        """Apply the keys' jobs and record how each ended: the ended jobs, in queue order, per key (None: the key's
        lease was lost, which is then its only end)."""
        ends: dict[str, list[JobEnd]] = {}
        by_tenant = _by_tenant(list(queued))
        for keys in by_tenant.values():
            lane, singles = self._lane(keys[0]), [key for key in keys if len(queued[key]) == 1]
            if singles:
                batch = [(queued[key][0], heads[key].cached_newest) for key in singles]
                ends.update((key, [end]) for key, end in zip(singles, lane.applier.apply(batch, chained=False)))
            for key in (key for key in keys if len(queued[key]) > 1):
                ends[key] = lane.applier.apply([(job, heads[key].cached_newest) for job in queued[key]], chained=True)
        finished: dict[str, Job] = {}
        for keys in by_tenant.values():
            kept = [end for key in keys for end in ends[key] if not end.lease_lost]
            finished.update((job.id, job) for job in self._lane(keys[0]).outcomes.finish(kept))
        return {
            key: None if any(end.lease_lost for end in ends[key]) else [finished[end.job.id] for end in ends[key]]
            for key in queued
        }

    def _queued(self, heads: dict[str, Heads]) -> dict[str, list[Job]]:
        """The jobs each key's step applies: a transaction at its head alone, else the jobs up to the first
        transaction or job without its payload copy (that job alone when it heads the queue, read from MongoDB;
        none when it is not found). Each payload is parsed once (a transaction heads many keys)."""
        parsed: dict[str, Job] = {}
        queued: dict[str, list[Job]] = {}
        for key, held in heads.items():
            jobs = []
            for job_id, payload in itertools.takewhile(lambda pair: pair[1] is not None, held.jobs):
                if job_id not in parsed and payload is not None:
                    parsed[job_id] = Job.from_payload(payload)
                jobs.append(parsed[job_id])
            if not jobs:
                found = self._lane(key).db.jobs.accepted(held.jobs[0][0])
                jobs = [found] if found is not None else []
            if jobs and jobs[0].request.action == Action.TRANSACTION:
                queued[key] = jobs[:1]
            else:
                queued[key] = list(itertools.takewhile(lambda job: job.request.action != Action.TRANSACTION, jobs))
        return queued

    def give_up(self, key: str, attempts: int, result: JobResult | None = None) -> str | None:
        """Fail the job at the head of `key` alone, after `attempts` attempts that raised: its own outcome says so
        (or, if it had written its version before failing, that version is its result), and the key moves on."""
        lane = self._lane(key)
        job_id, payload = self._schedule.head(key)
        job = Job.from_payload(payload) if payload else (lane.db.jobs.accepted(job_id) if job_id else None)
        if job is None:
            return None
        earlier = lane.applier.written_by(job) if job.request.action != Action.TRANSACTION else None
        if earlier is not None:
            lane.outcomes.finish([lane.applier.earlier_result(job, earlier)])
            return job.id
        log.error("job given up after repeated failures", extra={"job_id": job.id, "key": key, "attempts": attempts})
        failed = (
            f"The server failed {attempts} times while applying this job; it was not applied, and later jobs on the "
            "resource go on"
        )
        lane.outcomes.finish([JobEnd(job, result or JobResult.error(500, "exception", failed))])
        return job.id

    def _take_over(self, key: str) -> str | None:
        """The lease of a holder that died mid-drain (its message came back to us): taken now, and the job it
        was applying counts one attempt; after MAX_JOB_ATTEMPTS that job fails alone, so a job that kills its
        worker (or runs past the task's hard time limit) every time cannot stop its key."""
        held = self._schedule.lease_holder(key)
        if held is None or not self._holder_gone(held[0]):
            return None
        token = self._schedule.take_over(key, held[1], self._settings.lease_seconds, self._holder)
        if token is None:
            return None
        job_id, _ = self._schedule.head(key)
        attempts = self._schedule.attempt(job_id, f"died:{held[0]}") if job_id else 0
        log.warning(
            "took over the lease of a dead worker",
            extra={"key": key, "job_id": job_id, "attempt": attempts, "holder": held[0]},
        )
        if job_id and attempts >= MAX_JOB_ATTEMPTS:
            limit = self._settings.job_time_limit_seconds
            stopped = (
                f"Applying this job stopped its worker {attempts} times (past the time limit of {limit:g}s per job, "
                "or the process died); it was not applied, and later jobs on the resource go on"
            )
            self.give_up(key, attempts, JobResult.error(422, "too-costly", stopped))
        return token


def _by_tenant(keys: list[str]) -> dict[str, list[str]]:
    """Queue keys grouped by their tenant, in order (each tenant's jobs are applied in its own registry)."""
    grouped: dict[str, list[str]] = {}
    for key in keys:
        grouped.setdefault(split_queue_key(key)[0], []).append(key)
    return grouped
