"""What an API process holds of the worker side, opened once from Settings.

The API reads the stores (through their Protocols), submits through the one
submission path, and reports a few Redis readings (a group's progress, the
sync marker, backpressure, metrics, the workers answering a ping): all of it
is here, so the API imports nothing else of the worker but the model, the
errors and the settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery

from worker.broker import create_celery
from worker.model.clock import utc_now
from worker.model.latency import LATENCY_BUCKETS
from worker.model.stores import Stores
from worker.ordering import KeyQueues
from worker.ordering.admission import Admission
from worker.ordering.commit import Commit
from worker.ordering.metrics import Metrics
from worker.ordering.replays import ProofReplays
from worker.redis_clients import async_client, sync_client
from worker.schedule.keys import RedisKeys
from worker.schedule.replication import Replication
from worker.settings import Settings
from worker.storage.registries import Registries
from worker.submission.direct import DirectApply, api_holder
from worker.submission.drains import CeleryDrains, drainer_limits
from worker.submission.dry_run import DryRun
from worker.submission.submitter import Submitter


@dataclass(frozen=True)
class QueueReadings:
    """The Redis figures the API reports; each call is one short round trip."""

    queues: KeyQueues
    admission: Admission
    metrics: Metrics
    drains: CeleryDrains

    @property
    def wakeup_channel(self) -> str:
        return self.queues.wakeups.channel

    def group_counts(self, group_id: str) -> dict[str, int]:
        """accepted / rejected / applied / failed / cancelled of a group; empty when Redis lost them."""
        return self.queues.counters.group_counts(group_id)

    def unsynced(self, tenants: list[str]) -> list[str]:
        """The tenants whose queues are being rebuilt from their registry (Redis is new or lost its data)."""
        return [tenant for tenant in tenants if not self.queues.schedule.synced(tenant)]

    def stalled_for(self) -> tuple[int, float]:
        return self.admission.stalled_for()

    def snapshot(self) -> dict[str, Any]:
        return self.metrics.snapshot()

    def workers_answering(self, timeout: float) -> list[str]:
        return self.drains.workers_answering(timeout)

    @property
    def latency_buckets(self) -> tuple[float, ...]:
        return LATENCY_BUCKETS

    def ping(self) -> None:
        self.queues.ping()


@dataclass(frozen=True)
class Registry:
    """One community's (tenant's) registry as an API process holds it: its stores, the one submission path into
    them, and its dry runs."""

    tenant: str
    stores: Stores
    submitter: Submitter
    dry_run: DryRun
    direct: DirectApply | None  # None: FHIR_PATCH_DIRECT_SYNC is off


@dataclass(frozen=True)
class Backends:
    registries: Mapping[str, Registry]  # by tenant (only `default` without FHIR_PATCH_TENANTS)
    readings: QueueReadings
    replays: ProofReplays
    _redis: redis.Redis
    _celery: Celery
    _mongodb: Registries
    _settings: Settings

    @classmethod
    def open(cls, settings: Settings) -> Backends:
        client = sync_client(settings.redis_url, settings, socket_timeout=5, socket_connect_timeout=2)
        queues = KeyQueues(
            client, settings.namespace, Replication(settings.replicas_to_wait_for, settings.redis_wait_ms)
        )
        databases = Registries.open(settings, queues.copies.hint)
        celery = create_celery(settings)
        drains = CeleryDrains(celery, queues.schedule, drainer_limits(settings))
        metrics = Metrics(client, settings.namespace)
        admission = Admission(client, settings.namespace, settings.max_unfinished_per_client, settings.max_queue_depth)
        registries = {
            tenant: Registry(
                tenant,
                databases[tenant],
                Submitter(databases[tenant], queues.schedule, admission, drains, queues.counters.count_group),
                DryRun(settings, databases[tenant], queues.schedule, tenant=tenant),
                _direct(settings, databases[tenant], queues, drains, tenant),
            )
            for tenant in databases
        }
        readings = QueueReadings(queues, admission, metrics, drains)
        replays = ProofReplays(client, RedisKeys(settings.namespace))
        return cls(registries, readings, replays, client, celery, databases, settings)

    def listener(self) -> aioredis.Redis:
        """An asyncio client for the wake-up channel (the API's ResultWaiter), of the same master."""
        return async_client(self._settings.redis_url, self._settings, socket_connect_timeout=3)

    def ensure_indexes(self) -> None:
        self._mongodb.ensure_indexes()

    def ping_mongodb(self) -> dict[str, Any]:
        reply: dict[str, Any] = self._mongodb.any.client.admin.command("ping")
        return reply

    def close(self) -> None:
        self._redis.close()
        self._mongodb.close()
        self._celery.close()


def _direct(
    settings: Settings, database: Stores, queues: KeyQueues, drains: CeleryDrains, tenant: str
) -> DirectApply | None:
    """What lets this API process apply a synchronous write itself, on an idle key (worker/submission/direct.py)."""
    if not settings.direct_sync:
        return None
    commit = Commit(database, queues.copies, tenant)
    return DirectApply(settings, database, queues.schedule, commit, drains, api_holder(os.getpid()), utc_now)
