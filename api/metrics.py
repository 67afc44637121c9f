"""/metrics: the service's numbers kept in Redis, exposed by a prometheus_client collector at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from worker.submission.backends import QueueReadings


class MetricsCollector(Collector):
    """prometheus_client collector reading the shared numbers at scrape time."""

    def __init__(self, readings: QueueReadings) -> None:
        self._readings = readings

    def collect(self) -> Iterator[Any]:
        snap = self._readings.snapshot()
        for name in ("accepted", "applied", "unchanged", "failed", "cancelled"):
            yield CounterMetricFamily(f"fhir_patch_jobs_{name}", f"Jobs {name}", value=snap["counts"].get(name, 0))
        yield GaugeMetricFamily(
            "fhir_patch_queue_depth", "Jobs queued in all per-resource queues", value=snap["queue_depth"]
        )
        yield GaugeMetricFamily("fhir_patch_active_keys", "Resources with queued jobs", value=snap["active_keys"])
        cumulative, buckets = 0.0, []
        for bound in [*(str(b) for b in self._readings.latency_buckets), "+Inf"]:
            cumulative += snap["latency"].get(bound, 0)
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "fhir_patch_accept_to_finish_seconds",
            "Seconds from accept to the job's end",
            buckets=buckets,
            sum_value=snap["latency"].get("sum", 0.0),
        )
