"""Connections and services the API holds for its lifetime, built once from Settings: one `Connections` per
community's registry (api/tenancy.py), all sharing the Redis side, the waiter and the authenticator."""

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
from worker.submission.backends import Backends, QueueReadings, Registry
from worker.submission.dry_run import DryRun


@dataclass(frozen=True)
class Connections:
    """What the routes of one community's requests use: its registry (stores, submission, dry runs) and the
    services over it, beside what every community shares."""

    settings: Settings
    backends: Backends
    waiter: ResultWaiter
    intake: Intake
    groups: GroupIntake
    conditional: ConditionalResolver
    authenticator: Authenticator
    registry: Registry

    @classmethod
    def open(cls, settings: Settings) -> dict[str, Connections]:
        """The connections of every registry, by tenant (one, `default`, without FHIR_PATCH_TENANTS)."""
        backends = Backends.open(settings)
        waiter = ResultWaiter(backends.listener(), backends.readings.wakeup_channel)
        authenticator = Authenticator(settings, replays=backends.replays)
        lenient = settings.store_validation == "lenient"
        return {
            tenant: cls(
                settings,
                backends,
                waiter,
                Intake(registry.stores, registry.submitter, waiter, registry.direct),
                GroupIntake(registry.stores, registry.submitter, backends.readings, lenient, tenant),
                ConditionalResolver(registry.stores),
                authenticator,
                registry,
            )
            for tenant, registry in backends.registries.items()
        }

    @property
    def tenant(self) -> str:
        return self.registry.tenant

    @property
    def database(self) -> Stores:
        return self.registry.stores

    @property
    def submitter(self) -> Submitter:
        return self.registry.submitter

    @property
    def dry_run(self) -> DryRun:
        return self.registry.dry_run

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
