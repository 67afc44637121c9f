"""In-memory doubles of the Redis queues, admission and metrics, for unit tests of the service logic.

They keep the semantics the service relies on (FIFO per key, leases with
tokens, payload copies, newest copies that only move forward, transaction
holds); the Lua scripts themselves are tested on the real Redis by the
pipeline tests.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from worker.errors import ServiceBusy, TooManyUnfinished
from worker.model.groups import entry_job_id
from worker.model.versions import StoredVersion
from worker.ordering.admission import Granted
from worker.ordering.arrivals import Arrival
from worker.ordering.keys import RedisKeys
from worker.ordering.leases import Finished, Heads, KeyState, Step


@dataclass
class MemoryLeases:
    """Queues, leases and drain marks of resource keys."""

    queues: dict[str, list[str]] = field(default_factory=dict)
    payloads: dict[str, str] = field(default_factory=dict)
    leases: dict[str, str] = field(default_factory=dict)
    sched: dict[str, str] = field(default_factory=dict)
    alive_workers: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)
    attempt_causes: dict[str, set[str]] = field(default_factory=dict)
    counted: list[Finished] = field(default_factory=list)
    locks: set[str] = field(default_factory=set)
    copies: MemoryCopies | None = None
    tokens: Iterator[int] = field(default_factory=itertools.count)

    def acquire(self, key: str, lease_seconds: float, holder: str = "") -> str | None:
        if key in self.leases:
            return None
        self.leases[key] = f"{holder}|{next(self.tokens)}"
        return self.leases[key]

    def lease_holder(self, key: str) -> tuple[str, str] | None:
        token = self.leases.get(key)
        return (token.split("|", 1)[0], token) if token else None

    def take_over(self, key: str, previous: str, lease_seconds: float, holder: str) -> str | None:
        if self.leases.get(key) != previous:
            return None
        self.leases[key] = f"{holder}|{next(self.tokens)}"
        return self.leases[key]

    def release(self, key: str, token: str) -> bool:
        if self.leases.get(key) == token:
            del self.leases[key]
        if self.queues.get(key):
            return True
        self.sched.pop(key, None)
        return False

    def next_jobs(
        self, key: str, token: str, lease_seconds: float, finished: list[Finished], limit: int, acquire: bool = False
    ) -> Heads | None:
        if acquire and key in self.leases:
            return None
        if acquire:
            self.leases[key] = token
        if self.leases.get(key) != token:
            return None
        queue = self.queues.setdefault(key, [])
        for done in finished:
            if queue and queue[0] == done.job_id:
                queue.pop(0)
                self.payloads.pop(done.job_id, None)
                if done.outcome:
                    self.counted.append(done)
        if not queue:
            del self.leases[key]
            self.sched.pop(key, None)
            return Heads(None, [])
        cached = self.copies.newest_copy(key) if self.copies else None
        return Heads(cached, [(job_id, self.payloads.get(job_id)) for job_id in queue[:limit]])

    def next_jobs_many(self, steps: list[Step], lease_seconds: float, limit: int) -> list[Heads | None]:
        return [self.next_jobs(s.key, s.token, lease_seconds, s.finished, limit, s.acquire) for s in steps]

    def new_token(self, holder: str) -> str:
        return f"{holder}|{next(self.tokens)}"

    def head(self, key: str) -> tuple[str | None, str | None]:
        queue = self.queues.get(key) or []
        return (queue[0], self.payloads.get(queue[0])) if queue else (None, None)

    def attempt(self, job_id: str, cause: str) -> int:
        self.attempt_causes.setdefault(job_id, set()).add(cause)
        self.attempts[job_id] = len(self.attempt_causes[job_id])
        return self.attempts[job_id]

    def reschedule(self, key: str, now: float) -> None:
        self.sched[key] = f"s:{now}"

    def taken(self, keys: list[str], worker: str, now: float) -> None:
        for key in keys:
            if key in self.sched:
                self.sched[key] = f"t:{worker}:{now}"

    def untake(self, key: str, worker: str) -> None:
        if self.sched.get(key, "").startswith(f"t:{worker}:"):
            del self.sched[key]

    def heartbeat(self, worker: str, seconds: float) -> None:
        self.alive_workers.add(worker)

    def alive(self, worker: str) -> bool:
        return worker in self.alive_workers

    def state(self, key: str) -> KeyState:
        return KeyState(len(self.queues.get(key) or []), key in self.leases, self.sched.get(key))

    def active_keys(self) -> Iterator[str]:
        return iter([key for key, queue in self.queues.items() if queue])

    def lock(self, name: str, milliseconds: int) -> bool:
        if name in self.locks:
            return False
        self.locks.add(name)
        return True

    def unlock(self, name: str) -> None:
        self.locks.discard(name)


@dataclass
class MemoryReady:
    """The ready list, as far as the reconciler reads it: how many items wait for a drainer."""

    items: int = 0

    def waiting(self) -> int:
        return self.items


@dataclass
class MemoryCopies:
    kept: dict[str, tuple[int, str]] = field(default_factory=dict)

    def remember_many(self, versions: list[tuple[str, int, str]]) -> None:
        for key, version_id, document in versions:
            self.remember_newest(key, version_id, document)

    def remember_newest(self, key: str, version_id: int, document: str, seconds: int = 86_400) -> bool:
        if version_id < self.kept.get(key, (0, ""))[0]:
            return False
        self.kept[key] = (version_id, document)
        return True

    def remember_copy(self, version: StoredVersion) -> None:
        self.remember_newest(version.key, version.version_id, version.to_cache())

    def newest_copy(self, key: str) -> str | None:
        return self.kept[key][1] if key in self.kept else None

    def newest_copies(self, keys: list[str]) -> list[str | None]:
        return [self.newest_copy(key) for key in keys]

    def newest_version(self, key: str) -> int:
        return self.kept.get(key, (0, ""))[0]


@dataclass
class MemoryWakeups:
    published: list[dict[str, Any]] = field(default_factory=list)

    def publish(self, messages: list[str]) -> None:
        self.published += [json.loads(m) for m in messages]


@dataclass
class MemoryHolds:
    leases: MemoryLeases

    def hold(self, keys: list[str], token: str, job_id: str, lease_seconds: float) -> bool:
        mine = token
        for key in keys:
            holder = self.leases.leases.get(key)
            if (holder and holder != mine) or (self.leases.queues.get(key) or [None])[0] != job_id:
                return False
        for key in keys:
            self.leases.leases[key] = mine
        return True

    def park(self, key: str, token: str) -> None:
        if self.leases.leases.get(key) == token:
            del self.leases.leases[key]
        self.leases.sched.pop(key, None)

    def complete_transaction(self, keys: list[str], token: str, done: Finished) -> list[str]:
        more = []
        for key in keys:
            queue = self.leases.queues.get(key) or []
            if queue and queue[0] == done.job_id:
                queue.pop(0)
            if self.leases.leases.get(key) == token:
                del self.leases.leases[key]
            if queue:
                self.leases.sched[key] = "s:0"
                more.append(key)
            else:
                self.leases.sched.pop(key, None)
        if self.leases.payloads.pop(done.job_id, None) is not None and done.outcome:
            self.leases.counted.append(done)
        return more


@dataclass
class MemoryArrivals:
    leases: MemoryLeases
    in_sync: bool = True
    accepted: int = 0

    def enqueue(self, key: str, job_id: str, payload: str, now: float, count: bool = True) -> Arrival:
        self.accepted += count
        if job_id in self.leases.payloads:
            return Arrival.QUEUED
        self.leases.queues.setdefault(key, []).append(job_id)
        self.leases.payloads[job_id] = payload
        if key in self.leases.sched:
            return Arrival.QUEUED
        self.leases.sched[key] = f"s:{now}"
        return Arrival.SEND_DRAIN

    def enqueue_many(self, jobs: list[tuple[str, str, str]], now: float) -> tuple[list[str], bool]:
        arrivals = [self.enqueue(key, job_id, payload, now, count=False) for key, job_id, payload in jobs]
        keys = [key for (key, _, _), a in zip(jobs, arrivals) if a is Arrival.SEND_DRAIN]
        return list(dict.fromkeys(keys)), False

    def enqueue_transaction(self, keys: list[str], job_id: str, payload: str, now: float) -> list[str] | None:
        to_wake = [key for key in keys if key not in self.leases.sched]
        for key in keys:
            self.leases.queues.setdefault(key, []).append(job_id)
            self.leases.sched.setdefault(key, f"s:{now}")
        self.leases.payloads[job_id] = payload
        return to_wake

    def synced(self) -> bool:
        return self.in_sync

    def queued(self, job_id: str) -> bool:
        return job_id in self.leases.payloads

    def not_queued(self, job_ids: list[str]) -> list[str]:
        return [job_id for job_id in job_ids if job_id not in self.leases.payloads]


@dataclass
class MemoryCounters:
    counts: dict[str, int] = field(default_factory=dict)
    groups: dict[str, dict[str, int]] = field(default_factory=dict)
    scheduled: set[str] = field(default_factory=set)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def count_group(self, group_id: str, accepted: int, rejected: int) -> None:
        counts = self.groups.setdefault(group_id, {})
        counts["accepted"] = counts.get("accepted", 0) + accepted
        counts["rejected"] = counts.get("rejected", 0) + rejected

    def group_counts(self, group_id: str) -> dict[str, int]:
        return dict(self.groups.get(group_id, {}))

    def callback_scheduled(self, job_id: str, seconds: float) -> None:
        self.scheduled.add(job_id)

    def callback_is_scheduled(self, job_id: str) -> bool:
        return job_id in self.scheduled


class MemoryQueues:
    """KeyQueues in memory: the same parts, the same method names."""

    def __init__(self, namespace: str = "t") -> None:
        self.keys = RedisKeys(namespace)
        self.copies = MemoryCopies()
        self.leases = MemoryLeases(copies=self.copies)
        self.arrivals = MemoryArrivals(self.leases)
        self.holds = MemoryHolds(self.leases)
        self.counters = MemoryCounters()
        self.wakeups = MemoryWakeups()
        self.ready = MemoryReady()

    def ping(self) -> None:
        pass


@dataclass
class RecordedDrains:
    """A DrainSender that records the keys it was asked to drain."""

    sent: list[str] = field(default_factory=list)
    together: list[list[str]] = field(default_factory=list)  # the key lists asked for in one message

    def send(self, keys: list[str], together: bool = False) -> None:
        self.sent += keys
        if together:
            self.together.append(keys)


def entry_ids(group_id: str, count: int) -> list[str]:
    return [entry_job_id(group_id, n) for n in range(1, count + 1)]


@dataclass
class MemoryAdmission:
    """Admission control in memory: unfinished jobs per client and in all, with the same limits and refusals."""

    per_client: int = 1000
    total: int = 10_000
    unfinished: dict[str, int] = field(default_factory=dict)

    def reserve(self, client: str, wanted: int) -> Granted:
        used, everyone = self.unfinished.get(client, 0), sum(self.unfinished.values())
        count = max(0, min(wanted, self.per_client - used, self.total - everyone))
        self.unfinished[client] = used + count
        return Granted(count, used, everyone)

    def release(self, client: str, count: int) -> None:
        self.unfinished[client] = self.unfinished.get(client, 0) - count

    def refusal(self, granted: Granted, client: str, wanted: int) -> TooManyUnfinished | ServiceBusy:
        return TooManyUnfinished(f"Client {client!r} has {granted.client_unfinished} jobs not yet finished", "request")

    def admit(self, client: str, wanted: int) -> None:
        granted = self.reserve(client, wanted)
        if granted.count < wanted:
            self.release(client, granted.count)
            raise self.refusal(granted, client, wanted)


@dataclass
class MemoryMetrics:
    accepted_jobs: int = 0

    def accepted(self, n: int = 1) -> None:
        self.accepted_jobs += n
