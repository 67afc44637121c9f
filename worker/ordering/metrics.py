"""Service metrics kept in Redis, so every API and worker process adds to one set of numbers.

Jobs are counted when they leave their queue (KeyQueues.next_job), which happens exactly once per job.

Workers and the API are separate processes (and Celery forks more); counting
in Redis gives `/metrics` the totals of all of them without Prometheus'
multiprocess mode. The API exposes them with a prometheus_client collector.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Seconds from accept to applied: the service's latency as clients feel it.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def latency_bucket(seconds: float) -> str:
    """The histogram bucket (upper bound) a latency falls in."""
    return next((str(b) for b in LATENCY_BUCKETS if seconds <= b), "+Inf")


class Metrics:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._redis = client
        self._counts = f"{namespace}:metrics:counts"
        self._latency = f"{namespace}:metrics:latency"
        self._keys_set = f"{namespace}:keys"
        self._queue_prefix = f"{namespace}:q:"

    def accepted(self, n: int = 1) -> None:
        self._redis.hincrby(self._counts, "accepted", n)

    def snapshot(self) -> dict[str, Any]:
        counts = {_text(k): int(v) for k, v in self._redis.hgetall(self._counts).items()}
        latency = {_text(k): float(v) for k, v in self._redis.hgetall(self._latency).items()}
        keys = [_text(k) for k in self._redis.smembers(self._keys_set)]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.llen(self._queue_prefix + key)
        depth = sum(int(n) for n in pipe.execute()) if keys else 0
        return {"counts": counts, "latency": latency, "queue_depth": depth, "active_keys": len(keys)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class MetricsCollector(Collector):
    """prometheus_client collector reading the shared numbers at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        snap = self._metrics.snapshot()
        for name in ("accepted", "applied", "failed", "cancelled"):
            yield CounterMetricFamily(f"fhir_patch_jobs_{name}", f"Jobs {name}", value=snap["counts"].get(name, 0))
        yield GaugeMetricFamily(
            "fhir_patch_queue_depth", "Jobs queued in all per-resource queues", value=snap["queue_depth"]
        )
        yield GaugeMetricFamily("fhir_patch_active_keys", "Resources with queued jobs", value=snap["active_keys"])
        cumulative, buckets = 0.0, []
        for bound in [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]:
            cumulative += snap["latency"].get(bound, 0)
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "fhir_patch_accept_to_finish_seconds",
            "Seconds from accept to the job's end",
            buckets=buckets,
            sum_value=snap["latency"].get("sum", 0.0),
        )
