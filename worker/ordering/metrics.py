"""Service metrics kept in Redis, so every API and worker process adds to one set of numbers.

Jobs are counted when they leave their queue (the drain step's script), which happens exactly once per job.

Workers and the API are separate processes (and Celery forks more); counting
in Redis gives `/metrics` the totals of all of them without Prometheus'
multiprocess mode. The API exposes them with a prometheus_client collector (api/metrics.py).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.schedule.keys import RedisKeys, decoded


@translating(RedisError, "Redis")
class Metrics:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._redis = client
        self._keys = RedisKeys(namespace)

    def accepted(self, n: int = 1) -> None:
        self._redis.hincrby(self._keys.counts, "accepted", n)

    def snapshot(self) -> dict[str, Any]:
        counts = {decoded(k): int(v) for k, v in self._redis.hgetall(self._keys.counts).items()}
        latency = {decoded(k): float(v) for k, v in self._redis.hgetall(self._keys.latency).items()}
        keys = [decoded(k) for k in self._redis.smembers(self._keys.keys_set)]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.llen(self._keys.queue(key))
        depth = sum(int(n) for n in pipe.execute()) if keys else 0
        return {"counts": counts, "latency": latency, "queue_depth": depth, "active_keys": len(keys)}
