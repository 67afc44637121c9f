"""`KeySchedule`: the life of a resource key, and the only code that changes it.

A resource's jobs are applied one at a time, in arrival order, exactly once. What that rests on is the life of
its key, stated here once. States (worker/schedule/states.py), who moves a key between them, what a crash at
that point leaves, and who repairs it:

- `arrive` (intake): IDLE -> OFFERED, or a key already owed a drain stays. A crash before it leaves a job
  recorded in MongoDB and not queued, never acknowledged: a retry with its Idempotency-Key queues it, else the
  reconciler restores it.
- `claim` / `settle` (intake, a synchronous request applying its own job: worker/submission/direct.py): IDLE
  -> DRAINING under the request's lease and an offered mark, so jobs arriving meanwhile queue without an offer;
  `settle` keeps the copy of the version it wrote, counts the job and gives the key up (IDLE, or OFFERED when
  jobs arrived: the caller offers it). A crash leaves the lease to expire and the mark: the reconciler revives a
  key offered longer than a lease ago. The job's version in MongoDB is its only record, so a crash before it
  commits leaves nothing.
- `offer` (intake, a drain with more, the reconciler): the key's item joins the ready list. A crash before it
  leaves a mark with no item: the reconciler revives a key offered longer than a lease ago while nothing waits.
- `take` (a drainer): OFFERED -> TAKEN by its worker process. A dead process leaves its taken marks: the
  reconciler revives them once its heartbeat stopped; its Celery message coming back resumes them first.
- `next_jobs`, acquiring (the drain loop): TAKEN -> DRAINING under a lease. A crash leaves a lease that expires;
  a holder known dead is taken over at once (`take_over`), and its head job counts one `attempt`.
- `next_jobs`, renewing: jobs taken off the head and counted, DRAINING -> IDLE when the queue empties. A crash
  re-runs the head job: its gate in MongoDB makes the re-run harmless.
- `release` (the drain loop): DRAINING -> OFFERED (more queued: offered again) or IDLE.
- `retry` (the drain loop, after a failure): -> RETRYING until due, then `offer`/`take` move it onto the ready
  list; the reconciler revives it if it is still untaken a lease after due.
- `hold` / `park` / `complete_transaction` (the drain loop): a transaction holds the leases of all its keys
  only when it heads every queue; otherwise the key steps aside, PARKED (no mark, no lease), until the
  transaction completes and offers its keys again (or the reconciler does, after a lease).
- `untake` (the drain loop, when another holds the lease): TAKEN -> no mark of this process.
- `rebuild` / `finish_sync` (the reconciler, after Redis lost data): every queue from MongoDB in acceptance
  order, then the jobs held meanwhile; the marker is set last, so a restore cut short is simply done again. The
  marker and the held jobs are per realm (a queue key's first segment: its tenant, keys.py `realm_of`), so a
  tenant whose registry cannot be read stays held alone while the others are restored.

FIFO rests on three rules: a job is queued only in the step that records its arrival (`arrive`, or the
rebuild's acceptance order), only the lease holder takes jobs off a queue, and a job leaves its queue only
after its outcome is recorded. Exactly-once rests on the gate and the compare-and-set insert of each version
in MongoDB, not on Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from worker.model.groups import group_of
from worker.model.jobs import Job
from worker.schedule.states import KeyView


class Arrival(Enum):
    HELD = -1  # recorded, not queued: Redis is not in sync with MongoDB (the reconciler queues it, in order)
    QUEUED = 0  # behind a drain already owed
    SEND_DRAIN = 1  # queued on an idle key: the caller offers it
    ALREADY = 2  # it was queued already (a retry, or a restore racing one): nothing done


APPLIED, UNCHANGED = "applied", "unchanged"  # outcomes a job leaves with (UNCHANGED counts as APPLIED too)


@dataclass(frozen=True)
class Finished:
    """A job leaving its queue: its outcome (applied, failed, cancelled; empty: not counted) and seconds since
    accept. `unchanged` is a patch that changed nothing: counted as applied, and as unchanged too."""

    job_id: str
    outcome: str
    seconds: float
    group: str = ""
    client: str = ""  # whose unfinished-job count it leaves ('' when none)


@dataclass(frozen=True)
class Claimed:
    """An idle key claimed for a synchronous request's own job, with the copy of the resource's newest version."""

    cached_newest: str | None


@dataclass(frozen=True)
class Heads:
    """The first jobs of a key's queue (job id, payload copy), and the copy of the resource's newest version; no
    jobs: the queue was empty, and the lease and mark were released in the same step."""

    cached_newest: str | None
    jobs: list[tuple[str, str | None]]

    @property
    def released(self) -> bool:
        return not self.jobs


@dataclass(frozen=True)
class Step:
    """One key's drain step: its lease token, the jobs that ended (to take off and count), and whether the step
    takes the lease (the first) or renews it."""

    key: str
    token: str
    finished: list[Finished]
    acquire: bool = False


@dataclass(frozen=True)
class DrainerLimits:
    """How many drainers may live at once (the pool processes of all workers) and when a silent one stops
    counting (its process died: a lease without a sign of life)."""

    cap: int
    stale_seconds: float


MOST_ITEMS_PER_TAKE = 16  # a drainer applies the single jobs of several keys together (worker/service/drain.py)


def distinct_items(items: list[list[str]]) -> list[list[str]]:
    """Items taken together, each the list of its keys: single keys first, each once, then transactions' items; a
    key that is also in a transaction's item comes with that item only (one drain per key in a take)."""
    grouped = {key for item in items if len(item) > 1 for key in item}
    singles = list(dict.fromkeys(item[0] for item in items if len(item) == 1 and item[0] not in grouped))
    return [[key] for key in singles] + [item for item in items if len(item) > 1]


class KeySchedule(Protocol):
    """The transitions of resource keys (see the module's table); Redis (redis_schedule.py) and memory
    (memory.py) implement it, held to one contract suite (tests/schedule/)."""

    # intake
    def arrive(self, key: str, job_id: str, payload: str, now: float) -> Arrival: ...
    def arrive_many(self, jobs: list[tuple[str, str, str]], now: float) -> tuple[list[str], bool]: ...
    def arrive_transaction(self, keys: list[str], job_id: str, payload: str, now: float) -> list[str] | None: ...
    def claim(self, key: str, token: str, lease_seconds: float, now: float) -> Claimed | None: ...
    def settle(self, key: str, token: str, done: Finished, now: float, copy: tuple[int, str] | None = None) -> bool: ...
    def queued(self, job_id: str) -> bool: ...
    def not_queued(self, job_ids: list[str]) -> list[str]: ...

    # delivery
    def offer(self, items: list[str], now: float, limits: DrainerLimits) -> list[str]: ...
    def take(
        self, drainer: str, worker: str, now: float, mode: str = "pull", item: str | None = None
    ) -> list[list[str]]: ...
    def wait(self, seconds: float) -> str | None: ...
    def hand_over(self, drainer: str, now: float) -> None: ...
    def resumed(self, drainer: str) -> list[str]: ...
    def waiting(self) -> int: ...
    def taken(self, keys: list[str], worker: str, now: float) -> None: ...
    def untake(self, key: str, worker: str) -> None: ...
    def reoffer(self, key: str, now: float) -> None: ...
    def retry(self, key: str, due: float) -> None: ...
    def next_due(self) -> float | None: ...

    # drain
    def new_token(self, holder: str) -> str: ...
    def next_jobs(self, steps: list[Step], lease_seconds: float, limit: int) -> list[Heads | None]: ...
    def release(self, key: str, token: str) -> bool: ...
    def lease_holder(self, key: str) -> tuple[str, str] | None: ...
    def take_over(self, key: str, previous: str, lease_seconds: float, holder: str) -> str | None: ...
    def head(self, key: str) -> tuple[str | None, str | None]: ...
    def attempt(self, job_id: str, cause: str) -> int: ...
    def heartbeat(self, worker: str, seconds: float) -> None: ...
    def alive(self, worker: str) -> bool: ...

    # transactions
    def hold(self, keys: list[str], token: str, job_id: str, lease_seconds: float) -> bool: ...
    def park(self, key: str, token: str) -> None: ...
    def complete_transaction(self, keys: list[str], token: str, done: Finished, now: float) -> list[str]: ...

    # recovery
    def view(self, key: str) -> KeyView: ...
    def depths(self, keys: list[str]) -> list[int]: ...  # jobs queued on each key now (read only, for dry runs)
    def active_keys(self) -> Iterator[str]: ...
    def synced(self, realm: str) -> bool: ...
    # When the server answering now took over from another (a failover, or a restart that kept the data), seen
    # first at `now`: marks older than that may be from before, so a drain they stand for may never come.
    def served_since(self, now: float) -> float: ...
    # Drainers not seen since `since` no longer count (after a failover: their messages died with the old master).
    def drainers_gone_before(self, since: float) -> None: ...
    def rebuild(self, key: str, jobs: list[tuple[str, str]], now: float) -> bool | None: ...
    def finish_sync(self, realm: str, now: float) -> list[str]: ...
    def lock(self, name: str, milliseconds: int) -> bool: ...
    def unlock(self, name: str) -> None: ...


def leaving(job_id: str, job: Job | None) -> Finished:
    """How a job leaves its queue, for the counters: its outcome and seconds since accepted (nothing to count for
    an unknown or expired job)."""
    if job is None or not job.state.final:
        return Finished(job_id, "", 0.0)
    ended = job.finished_at or job.accepted_at
    outcome = UNCHANGED if job.result is not None and job.result.changed_nothing else job.state.value
    return Finished(job_id, outcome, max(0.0, (ended - job.accepted_at).total_seconds()), group_of(job_id), job.client)
