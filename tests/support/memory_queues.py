"""In-memory doubles of the Redis side beside the key schedule (copies, counters, wake-ups, admission), for unit
tests of the service logic. The key schedule's own twin is worker/schedule/memory.py, held to the same contract
suite as the Lua (tests/schedule/)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from worker.errors import ServiceBusy, TooManyUnfinished
from worker.model.groups import entry_job_id
from worker.ordering.admission import Granted
from worker.schedule.keys import RedisKeys
from worker.schedule.memory import MemorySchedule


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
        self.schedule = MemorySchedule(copy_of=self.copies.newest_copy, keep_copy=self.copies.remember_newest)
        self.counters = MemoryCounters()
        self.wakeups = MemoryWakeups()

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
