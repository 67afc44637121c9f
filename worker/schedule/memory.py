"""`KeySchedule` in memory, on a clock it is given: the same transitions as redis_schedule.py, held to the same
contract suite (tests/schedule/), so the service's loop and pipeline can be tested in milliseconds.

Leases and heartbeats expire by that clock (a test moves it); `lose_everything` is Redis losing its data.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from worker.schedule.keys import realm_of
from worker.schedule.port import (
    APPLIED,
    MOST_ITEMS_PER_TAKE,
    UNCHANGED,
    Arrival,
    Claimed,
    DrainerLimits,
    Finished,
    Heads,
    Step,
    distinct_items,
)
from worker.schedule.states import KeyView, Mark, MarkKind


@dataclass
class MemorySchedule:
    clock: Callable[[], float] = field(default=lambda: 0.0)
    sleep: Callable[[float], None] = field(default=lambda seconds: None)  # what a blocking `wait` spends
    queues: dict[str, list[str]] = field(default_factory=dict)
    payloads: dict[str, str] = field(default_factory=dict)
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # key -> (token, expires at)
    marks: dict[str, str] = field(default_factory=dict)
    ready: list[str] = field(default_factory=list)
    due: dict[str, float] = field(default_factory=dict)
    drainers: dict[str, float] = field(default_factory=dict)
    drainer_items: dict[str, str] = field(default_factory=dict)
    alive_until: dict[str, float] = field(default_factory=dict)
    attempt_causes: dict[str, set[str]] = field(default_factory=dict)
    counted: list[Finished] = field(default_factory=list)  # jobs that left their queue with an outcome
    counts: dict[str, int] = field(default_factory=dict)
    held: list[tuple[str, list[str], str]] = field(default_factory=list)
    in_sync: bool = True  # every realm (a fresh twin); after lose_everything, only those in `synced_realms`
    server_since: float = 0.0  # when the server answering took over (fail_over); 0: the first one
    synced_realms: set[str] = field(default_factory=set)
    locks: set[str] = field(default_factory=set)
    copy_of: Callable[[str], str | None] = field(default=lambda key: None)  # the newest copy next_jobs returns
    keep_copy: Callable[[str, int, str], object] = field(default=lambda key, version, doc: None)  # settle's copy
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def lose_everything(self) -> None:
        """Redis lost its data (restarted empty): every structure goes, and with it the sync marker."""
        self.__init__(clock=self.clock, sleep=self.sleep, copy_of=self.copy_of, keep_copy=self.keep_copy, in_sync=False)  # type: ignore[misc]

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    # intake

    def arrive(self, key: str, job_id: str, payload: str, now: float) -> Arrival:
        if job_id in self.payloads:
            return Arrival.ALREADY
        self._count("accepted")
        if not self.synced(realm_of(key)):
            self.held.append((job_id, [key], payload))
            return Arrival.HELD
        self.payloads[job_id] = payload
        self.queues.setdefault(key, []).append(job_id)
        return Arrival.SEND_DRAIN if self._owe_drain(key, now) else Arrival.QUEUED

    def _owe_drain(self, key: str, now: float) -> bool:
        if key in self.marks:
            return False
        self.marks[key] = Mark.offered(now).encode()
        return True

    def arrive_many(self, jobs: list[tuple[str, str, str]], now: float) -> tuple[list[str], bool]:
        arrivals = [self.arrive(key, job_id, payload, now) for key, job_id, payload in jobs]
        keys = [key for (key, _, _), a in zip(jobs, arrivals) if a is Arrival.SEND_DRAIN]
        return list(dict.fromkeys(keys)), Arrival.HELD in arrivals

    def arrive_transaction(self, keys: list[str], job_id: str, payload: str, now: float) -> list[str] | None:
        if job_id in self.payloads:
            return []
        self._count("accepted")
        if not self.synced(realm_of(keys[0])):
            self.held.append((job_id, list(keys), payload))
            return None
        self.payloads[job_id] = payload
        for key in keys:
            self.queues.setdefault(key, []).append(job_id)
        return [key for key in keys if self._owe_drain(key, now)]

    def claim(self, key: str, token: str, lease_seconds: float, now: float) -> Claimed | None:
        if not self.synced(realm_of(key)) or self.queues.get(key) or self._lease(key) is not None:
            return None
        if not self._owe_drain(key, now):
            return None
        self.leases[key] = (token, self.clock() + lease_seconds)
        return Claimed(self.copy_of(key))

    def settle(self, key: str, token: str, done: Finished, now: float, copy: tuple[int, str] | None = None) -> bool:
        if copy is not None:
            self.keep_copy(key, *copy)
        if done.outcome:
            self._count("accepted")
            self._counted(done)
        if self._lease(key) != token:
            return False
        del self.leases[key]
        if self.queues.get(key):
            self.marks[key] = Mark.offered(now).encode()
            return True
        self.marks.pop(key, None)
        return False

    def queued(self, job_id: str) -> bool:
        return job_id in self.payloads

    def not_queued(self, job_ids: list[str]) -> list[str]:
        return [job_id for job_id in job_ids if job_id not in self.payloads]

    # delivery

    def _promote_due(self, now: float) -> None:
        for key in sorted((k for k, at in self.due.items() if at <= now), key=lambda k: self.due[k]):
            self.ready.append(key)
            del self.due[key]

    def offer(self, items: list[str], now: float, limits: DrainerLimits) -> list[str]:
        self._promote_due(now)
        self.ready += items
        if not self.ready:
            return []
        self.drainers = {d: at for d, at in self.drainers.items() if at >= now - limits.stale_seconds}
        names = [f"d{next(self._seq)}" for _ in range(min(limits.cap - len(self.drainers), len(self.ready)))]
        self.drainers.update(dict.fromkeys(names, now))
        return names

    def take(
        self, drainer: str, worker: str, now: float, mode: str = "pull", item: str | None = None
    ) -> list[list[str]]:
        self._promote_due(now)
        items = [item] if item else []
        share = -(-len(self.ready) // max(1, len(self.drainers)))
        want = min(MOST_ITEMS_PER_TAKE - len(items), share)
        want = max(want, 1) if not items else want
        items += self.ready[: max(0, want)]
        del self.ready[: max(0, want)]
        if not items:
            self.drainer_items.pop(drainer, None)
            if mode == "retire":
                self.drainers.pop(drainer, None)
            else:
                self.drainers[drainer] = now
            return []
        self.drainers[drainer] = now
        self.drainer_items[drainer] = "\n".join(items)
        keys = [key for one in items for key in one.split()]
        self.taken(keys, worker, now)
        return distinct_items([one.split() for one in items])

    def wait(self, seconds: float) -> str | None:
        if not self.ready:
            self.sleep(seconds)  # as a blocking wait would; due retries do not join the list by themselves
        return self.ready.pop(0) if self.ready else None

    def hand_over(self, drainer: str, now: float) -> None:
        self.drainer_items.pop(drainer, None)
        self.drainers[drainer] = now

    def resumed(self, drainer: str) -> list[str]:
        return self.drainer_items.get(drainer, "").split()

    def waiting(self) -> int:
        return len(self.ready)

    def taken(self, keys: list[str], worker: str, now: float) -> None:
        for key in keys:
            if key in self.marks:
                self.marks[key] = Mark.taken(worker, now).encode()
        self._count("drains", len(keys))

    def untake(self, key: str, worker: str) -> None:
        mark = Mark.decode(self.marks.get(key))
        if mark is not None and mark.kind is MarkKind.TAKEN and mark.worker == worker:
            del self.marks[key]

    def reoffer(self, key: str, now: float) -> None:
        self.marks[key] = Mark.offered(now).encode()

    def retry(self, key: str, due: float) -> None:
        if key in self.marks:
            self.marks[key] = Mark.retrying(due).encode()
            self.due[key] = due

    def next_due(self) -> float | None:
        return min(self.due.values(), default=None)

    # drain

    def new_token(self, holder: str) -> str:
        return f"{holder}|{next(self._seq)}"

    def lease_to(self, key: str, token: str, seconds: float = 3600.0) -> None:
        """Let `token` hold the key's lease (a test standing for another process)."""
        self.leases[key] = (token, self.clock() + seconds)

    def _lease(self, key: str) -> str | None:
        token, until = self.leases.get(key, ("", 0.0))
        if token and until > self.clock():
            return token
        self.leases.pop(key, None)
        return None

    def next_jobs(self, steps: list[Step], lease_seconds: float, limit: int) -> list[Heads | None]:
        return [self._next(step, lease_seconds, limit) for step in steps]

    def _next(self, step: Step, lease_seconds: float, limit: int) -> Heads | None:
        key, held = step.key, self._lease(step.key)
        if step.acquire and held is not None:
            return None
        if not step.acquire and held != step.token:
            return None
        queue = self.queues.setdefault(key, [])
        for done in step.finished:
            if queue and queue[0] == done.job_id:
                queue.pop(0)
                self.payloads.pop(done.job_id, None)
                self._counted(done)
        if not queue:
            self.leases.pop(key, None)
            self.marks.pop(key, None)
            return Heads(None, [])
        self.leases[key] = (step.token, self.clock() + lease_seconds)
        return Heads(self.copy_of(key), [(job_id, self.payloads.get(job_id)) for job_id in queue[:limit]])

    def _counted(self, done: Finished) -> None:
        if done.outcome:
            self.counted.append(done)
            self._count(APPLIED if done.outcome == UNCHANGED else done.outcome)
            if done.outcome == UNCHANGED:
                self._count(UNCHANGED)

    def release(self, key: str, token: str) -> bool:
        if self._lease(key) == token:
            del self.leases[key]
        if self.queues.get(key):
            return True
        self.marks.pop(key, None)
        return False

    def lease_holder(self, key: str) -> tuple[str, str] | None:
        token = self._lease(key)
        return (token.split("|", 1)[0], token) if token else None

    def take_over(self, key: str, previous: str, lease_seconds: float, holder: str) -> str | None:
        if self._lease(key) != previous:
            return None
        token = self.new_token(holder)
        self.leases[key] = (token, self.clock() + lease_seconds)
        return token

    def head(self, key: str) -> tuple[str | None, str | None]:
        queue = self.queues.get(key) or []
        return (queue[0], self.payloads.get(queue[0])) if queue else (None, None)

    def attempt(self, job_id: str, cause: str) -> int:
        self.attempt_causes.setdefault(job_id, set()).add(cause)
        return len(self.attempt_causes[job_id])

    def heartbeat(self, worker: str, seconds: float) -> None:
        self.alive_until[worker] = self.clock() + seconds

    def alive(self, worker: str) -> bool:
        return self.alive_until.get(worker, 0.0) > self.clock()

    # transactions

    def hold(self, keys: list[str], token: str, job_id: str, lease_seconds: float) -> bool:
        for key in keys:
            holder = self._lease(key)
            if (holder and holder != token) or next(iter(self.queues.get(key) or []), None) != job_id:
                return False
        for key in keys:
            self.leases[key] = (token, self.clock() + lease_seconds)
        return True

    def park(self, key: str, token: str) -> None:
        if self._lease(key) == token:
            del self.leases[key]
        self.marks.pop(key, None)

    def complete_transaction(self, keys: list[str], token: str, done: Finished, now: float) -> list[str]:
        more = []
        for key in keys:
            queue = self.queues.get(key) or []
            if queue and queue[0] == done.job_id:
                queue.pop(0)
            if self._lease(key) == token:
                del self.leases[key]
            if queue:
                self.marks[key] = Mark.offered(now).encode()
                more.append(key)
            else:
                self.marks.pop(key, None)
        if self.payloads.pop(done.job_id, None) is not None:
            self._counted(done)
        return more

    # recovery

    def view(self, key: str) -> KeyView:
        leased = self._lease(key) is not None
        left = self.leases[key][1] - self.clock() if leased else 0.0
        return KeyView(len(self.queues.get(key) or []), leased, Mark.decode(self.marks.get(key)), left)

    def depths(self, keys: list[str]) -> list[int]:
        return [len(self.queues.get(key) or []) for key in keys]

    def active_keys(self) -> Iterator[str]:
        return iter([key for key, queue in self.queues.items() if queue])

    def synced(self, realm: str) -> bool:
        return self.in_sync or realm in self.synced_realms

    def served_since(self, now: float) -> float:
        return self.server_since  # one server for ever, unless a test says it failed over

    def drainers_gone_before(self, since: float) -> None:
        self.drainers = {d: at for d, at in self.drainers.items() if at >= since}

    def fail_over(self, now: float) -> None:
        """What a Redis failover does to the twin: the marks stay as they were, another server answers."""
        self.server_since = now

    def rebuild(self, key: str, jobs: list[tuple[str, str]], now: float) -> bool | None:
        if self._lease(key) is not None:
            return None
        listed = [job_id for job_id, _ in jobs]
        self.payloads.update(dict(jobs))
        order = listed + [job_id for job_id in self.queues.get(key, []) if job_id not in set(listed)]
        self.queues[key] = order
        if not order:
            return False
        self.marks[key] = Mark.offered(now).encode()
        return True

    def finish_sync(self, realm: str, now: float) -> list[str]:
        offer: list[str] = []
        for job_id, keys, payload in [h for h in self.held if realm_of(h[1][0]) == realm]:
            if job_id in self.payloads:
                continue
            self.payloads[job_id] = payload
            for key in keys:
                self.queues.setdefault(key, []).append(job_id)
                if self._owe_drain(key, now):
                    offer.append(key)
        self.held = [h for h in self.held if realm_of(h[1][0]) != realm]
        self.synced_realms.add(realm)
        return offer

    def lock(self, name: str, milliseconds: int) -> bool:
        if name in self.locks:
            return False
        self.locks.add(name)
        return True

    def unlock(self, name: str) -> None:
        self.locks.discard(name)

    def describe(self) -> str:
        """The whole state, for a failing test's message."""
        return json.dumps({"queues": self.queues, "marks": self.marks, "ready": self.ready, "due": self.due})
