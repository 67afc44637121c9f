"""Connections and services the API holds for its lifetime, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from api.auth import Authenticator
from api.conditional import ConditionalResolver
from api.groups import GroupIntake
from api.intake import Intake
from api.waiter import ResultWaiter
from worker.model.stores import Stores
from worker.model.versions import StoredVersion
from worker.settings import Settings
from worker.submission import Submitter
from worker.submission.backends import Backends, QueueReadings
from worker.submission.dry_run import DryRun


@dataclass(frozen=True)
class Connections:
    settings: Settings
    backends: Backends
    waiter: ResultWaiter
    intake: Intake
    groups: GroupIntake
    conditional: ConditionalResolver
    authenticator: Authenticator

    @classmethod
    def open(cls, settings: Settings) -> Connections:
        backends = Backends.open(settings)
        database = backends.stores
        waiter = ResultWaiter(settings.redis_url, backends.readings.wakeup_channel)
        return cls(
            settings,
            backends,
            waiter,
            Intake(database, backends.submitter, waiter),
            GroupIntake(database, backends.submitter, backends.readings, settings.store_validation == "lenient"),
            ConditionalResolver(database),
            Authenticator(settings, replays=backends.replays),
        )

    @property
    def database(self) -> Stores:
        return self.backends.stores

    @property
    def submitter(self) -> Submitter:
        return self.backends.submitter

    @property
    def dry_run(self) -> DryRun:
        return self.backends.dry_run

    @property
    def readings(self) -> QueueReadings:
        return self.backends.readings

    def newest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The newest version: the Redis copy the workers keep, else MongoDB."""
        return self.database.resources.newest(resource_type, resource_id)

    async def start(self) -> None:
        await self.waiter.start()

    async def close(self) -> None:
        await self.waiter.stop()
        self.backends.close()
