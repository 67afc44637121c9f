"""Counters and marks in Redis: service counts, each group's progress, callbacks already scheduled.

The counts of jobs arriving and leaving their queues move inside the schedule's scripts
(worker/schedule/lua/), exactly once per job; these are the others.
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.schedule.keys import RedisKeys, decoded


@translating(RedisError, "Redis")
class Counters:
    """Counts and marks of one namespace."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self.keys = keys

    def count(self, name: str, n: int = 1) -> None:
        self._redis.hincrby(self.keys.counts, name, n)

    def group_counters(self, group_id: str) -> str:
        """Hash of a group's counts (accepted, rejected, applied, failed): its progress without a MongoDB scan."""
        return self.keys.group(group_id)

    def count_group(self, group_id: str, accepted: int, rejected: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(self.group_counters(group_id), "accepted", accepted)
        pipe.hincrby(self.group_counters(group_id), "rejected", rejected)
        pipe.execute()

    def group_counts(self, group_id: str) -> dict[str, int]:
        return {decoded(k): int(v) for k, v in self._redis.hgetall(self.group_counters(group_id)).items()}

    def callback_scheduled(self, job_id: str, seconds: float) -> None:
        """Note that a callback attempt is scheduled within `seconds`, so the reconciler leaves it alone."""
        self._redis.set(self.keys.callback_scheduled(job_id), 1, ex=max(1, int(seconds + 30)))

    def callback_is_scheduled(self, job_id: str) -> bool:
        return bool(self._redis.exists(self.keys.callback_scheduled(job_id)))
