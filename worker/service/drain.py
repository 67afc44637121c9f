"""Apply jobs: drain one resource key, one job at a time, in the order they were accepted.

For each job at the head of the key's queue:
  1. claim it in MongoDB (accepted -> running; a cancelled job is skipped),
  2. read the current version; if this job already wrote a version (a
     redelivery after a crash) take that as its result,
  3. otherwise plan the change (pure) and commit version n+1 with a
     compare-and-set on n,
  4. record the outcome durably, publish the wake-up, and only then take the
     job off the queue.
A crash between any two steps repeats at most the steps after the last
durable one, and the job-id check in step 2 makes a repeat harmless.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from worker.model.clock import utc_now
from worker.model.jobs import Action, Job, JobResult
from worker.model.stores import Stores
from worker.ordering import KeyQueues
from worker.schedule import Finished, Heads, Step
from worker.service.apply import Applied, Applier, LeaseLost
from worker.service.commit import Commit
from worker.service.outcomes import Outcomes, leaving
from worker.service.transaction import TransactionRunner
from worker.settings import Settings

log = logging.getLogger("fhir_patch.drain")

MAX_JOBS_PER_DRAIN = 200  # then hand the key back to the queue, so one busy resource cannot hold a worker
BATCH = 50  # jobs of one key applied together: one bulk insert each of gates, versions and results
MAX_JOB_ATTEMPTS = 3  # drains that died (or failed) at the same head job before that job fails alone


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
        database: Stores,
        queues: KeyQueues,
        on_finished: Callable[[Job], None] = lambda job: None,
        clock: Callable[[], datetime] = utc_now,
        send_drain: Callable[[str], None] = lambda key: None,
        holder: str = "",
        holder_gone: Callable[[str], bool] = lambda holder: False,
        retire: Callable[[list[str]], None] | None = None,
    ) -> None:
        """`holder` names this process in the leases it takes; `holder_gone(h)` says whether the process named
        `h` is known to be dead (its leases are then taken over at once instead of waiting for them to expire);
        `retire` takes finished jobs out of flight (at once by default; a worker batches them)."""
        self._settings = settings
        self._holder = holder
        self._holder_gone = holder_gone
        self._db = database
        self._schedule = queues.schedule
        self._applier = Applier(settings, database, Commit(database, queues.copies), clock)
        self._outcomes = Outcomes(database, queues.wakeups, on_finished, clock, retire)
        self._transactions = TransactionRunner(settings, database, queues, self._applier, send_drain, clock)

    def drain(self, key: str) -> Drained:
        """Apply the key's queued jobs while holding its lease (taken, and in the end given up, in the same Redis
        steps that peek and complete jobs)."""
        token = self._schedule.new_token(self._holder)
        heads = self._next(Step(key, token, [], acquire=True))
        if heads is None:
            taken = self._take_over(key)
            if taken is None:  # its holder drains it (or the reconciler revives it when the lease expires)
                return Drained(0, False, held_elsewhere=True)
            token, heads = taken, self._next(Step(key, taken, []))
        return self._drain_held(key, token, heads)

    def drain_together(self, keys: list[str]) -> dict[str, Drained]:
        """Drain several keys. Those whose queue holds one single job are applied together, a step at a time (one
        command each for gates, versions and results; one Redis round trip each for leases, copies and wake-ups);
        a key with more queued, a transaction, or a key held by another goes through `drain`'s own loop."""
        keys = list(dict.fromkeys(keys))  # one lease per key, even if it was offered twice
        tokens = {key: self._schedule.new_token(self._holder) for key in keys}
        first = [Step(key, tokens[key], [], acquire=True) for key in keys]
        heads = dict(zip(keys, self._schedule.next_jobs(first, self._settings.lease_seconds, BATCH)))
        done: dict[str, Drained] = {}
        processed = dict.fromkeys(keys, 0)
        alone: list[str] = []
        try:
            while heads:
                jobs, later = _split(heads)
                for key, held in later.items():
                    if held is not None:  # its lease would expire while others drain (and a transaction takes the
                        self._schedule.release(key, tokens[key])  # leases of all its keys itself): taken again below
                    alone.append(key)
                heads = self._step_together(jobs, heads, tokens, processed, done) if jobs else {}
        except BaseException:
            for key in keys:
                if key not in done and key not in alone:
                    self._schedule.release(key, tokens[key])  # a retry starts at once instead of waiting out leases
            raise
        for key in alone:
            drained = self.drain(key)
            done[key] = replace(drained, processed=drained.processed + processed[key])
        return done

    def _step_together(
        self,
        jobs: dict[str, Job],
        heads: dict[str, Heads | None],
        tokens: dict[str, str],
        processed: dict[str, int],
        done: dict[str, Drained],
    ) -> dict[str, Heads | None]:
        """One step of keys drained together: their jobs applied, recorded, taken off; the keys that go on."""
        keys = list(jobs)
        results = self._applier.run_singles([(jobs[k], heads[k].cached_newest) for k in keys])  # type: ignore[union-attr]
        ended = iter(self._outcomes.finish([r for r in results if isinstance(r, Applied)]))
        steps = []
        for key, result in zip(keys, results):
            if isinstance(result, LeaseLost):
                log.warning("lease lost; another worker continues", extra={"key": key})
                done[key] = Drained(processed[key], False, held_elsewhere=True)
                continue
            processed[key] += 1
            job = next(ended) if isinstance(result, Applied) else result
            steps.append(Step(key, tokens[key], [leaving(jobs[key].id, job)]))
        following: dict[str, Heads | None] = {}
        for step, after in zip(steps, self._schedule.next_jobs(steps, self._settings.lease_seconds, BATCH)):
            key = step.key
            if after is None or after.released:
                done[key] = Drained(processed[key], False, held_elsewhere=after is None)
            elif processed[key] >= MAX_JOBS_PER_DRAIN:
                done[key] = Drained(processed[key], self._schedule.release(key, tokens[key]))
            else:
                following[key] = after
        return following

    def _next(self, step: Step) -> Heads | None:
        return self._schedule.next_jobs([step], self._settings.lease_seconds, BATCH)[0]

    def _drain_held(self, key: str, token: str, heads: Heads | None) -> Drained:
        """Go on draining a key whose lease `token` holds, from its `heads`."""
        processed = 0
        try:
            while heads is not None and not heads.released and processed < MAX_JOBS_PER_DRAIN:
                step = self._run_heads(heads, key, token)
                if step is None:  # a transaction ran (and woke its keys) or waits for another key: lease given up
                    return Drained(processed, False)
                if isinstance(step, LeaseLost):
                    heads = None
                    break
                processed += len(step)
                heads = self._next(Step(key, token, step))  # takes `step` off, counted
        except BaseException:
            self._schedule.release(key, token)  # let a retry start at once instead of waiting out the lease
            raise
        if heads is None:
            log.warning("lease lost; another worker continues", extra={"key": key, "processed": processed})
            return Drained(processed, False, held_elsewhere=True)
        if heads.released:
            return Drained(processed, False)
        return Drained(processed, self._schedule.release(key, token))

    def give_up(self, key: str, attempts: int, result: JobResult | None = None) -> str | None:
        """Fail the job at the head of `key` alone, after `attempts` attempts that raised: its own outcome says so
        (or, if it had written its version before failing, that version is its result), and the key moves on."""
        job_id, payload = self._schedule.head(key)
        job = Job.from_payload(payload) if payload else (self._db.jobs.accepted(job_id) if job_id else None)
        if job is None:
            return None
        earlier = self._applier.written_by(job) if job.request.action != Action.TRANSACTION else None
        if earlier is not None:
            self._outcomes.finish([self._applier.earlier_result(job, earlier)])
            return job.id
        log.error("job given up after repeated failures", extra={"job_id": job.id, "key": key, "attempts": attempts})
        failed = (
            f"The server failed {attempts} times while applying this job; it was not applied, and later jobs on the "
            "resource go on"
        )
        self._outcomes.finish([Applied(job, result or JobResult.error(500, "exception", failed), None)])
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

    def _run_heads(self, heads: Heads, key: str, token: str) -> list[Finished] | LeaseLost | None:
        """Apply the first jobs of the queue: the ones that ended, in queue order; None when a transaction took
        the lease (it takes itself off its queues)."""
        first_id = heads.jobs[0][0]
        pairs = itertools.takewhile(lambda pair: pair[1] is not None, heads.jobs)
        jobs = [Job.from_payload(payload) for _, payload in pairs if payload is not None]
        first = jobs[0] if jobs else self._db.jobs.accepted(first_id)
        if first is not None and first.request.action == Action.TRANSACTION:
            self._transactions.run(first, key, token)
            return None
        singles = list(itertools.takewhile(lambda job: job.request.action != Action.TRANSACTION, jobs))
        if len(singles) > 1:
            applied = self._applier.run_batch(singles, heads.cached_newest)
            if applied:
                return [leaving(job.id, job) for job in self._outcomes.finish(applied)]
        if first is None:
            log.warning("queued job not found (expired?)", extra={"job_id": first_id})
            return [leaving(first_id, None)]
        step = self._applier.run_job(first, heads.cached_newest)
        if isinstance(step, LeaseLost):
            return step
        ended = self._outcomes.finish([step])[0] if isinstance(step, Applied) else step
        return [leaving(first_id, ended)]


def _split(heads: dict[str, Heads | None]) -> tuple[dict[str, Job], dict[str, Heads | None]]:
    """Keys whose queue holds one single job that is not a transaction (drained together: key -> that job), and
    the others (drained alone: more queued, a transaction, a job without its payload copy, or a lease held by
    another: heads None). Each payload is parsed once (a transaction heads many keys)."""
    together: dict[str, Job] = {}
    later: dict[str, Heads | None] = {}
    parsed: dict[str, Job] = {}
    for key, held in heads.items():
        job_id, payload = held.jobs[0] if held is not None and len(held.jobs) == 1 else ("", None)
        if payload is not None and job_id not in parsed:
            parsed[job_id] = Job.from_payload(payload)
        job = parsed.get(job_id) if payload is not None else None
        if job is not None and job.request.action != Action.TRANSACTION:
            together[key] = job
        else:
            later[key] = held
    return together, later
