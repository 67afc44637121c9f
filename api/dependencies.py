"""Connections and services the API holds for its lifetime, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery

from api.auth import Authenticator
from api.conditional import ConditionalResolver
from api.groups import GroupIntake
from api.intake import Intake
from api.waiter import ResultWaiter
from worker.celery.app import create_celery
from worker.ordering import KeyQueues
from worker.ordering.admission import Admission
from worker.ordering.metrics import Metrics
from worker.settings import Settings
from worker.storage import Database, StoredVersion


@dataclass(frozen=True)
class Connections:
    settings: Settings
    redis: redis.Redis
    database: Database
    celery: Celery
    queues: KeyQueues
    metrics: Metrics
    waiter: ResultWaiter
    intake: Intake
    groups: GroupIntake
    conditional: ConditionalResolver
    authenticator: Authenticator
    admission: Admission

    @classmethod
    def open(cls, settings: Settings) -> Connections:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        queues = KeyQueues(client, settings.namespace)
        database = Database.open(
            settings, (queues.newest_version, queues.remember_copy, queues.newest_copy, queues.newest_copies)
        )
        celery = create_celery(settings)
        metrics = Metrics(client, settings.namespace)
        waiter = ResultWaiter(settings.redis_url, queues.done_channel)
        admission = Admission(client, settings.namespace, settings.max_unfinished_per_client, settings.max_queue_depth)
        return cls(
            settings,
            client,
            database,
            celery,
            queues,
            metrics,
            waiter,
            Intake(database, queues, celery, waiter, admission),
            GroupIntake(database, queues, metrics, celery, admission, settings.store_validation == "lenient"),
            ConditionalResolver(database),
            Authenticator(settings),
            admission,
        )

    def newest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The newest version: the Redis copy the workers keep, else MongoDB."""
        return self.database.resources.newest(resource_type, resource_id)

    async def start(self) -> None:
        await self.waiter.start()

    async def close(self) -> None:
        await self.waiter.stop()
        self.redis.close()
        self.database.close()
        self.celery.close()
