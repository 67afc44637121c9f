"""The registries: each community's (tenant's) Database, opened once from Settings.

Without FHIR_PATCH_TENANTS there is one, the `default` tenant's, on FHIR_PATCH_MONGODB_URI and
FHIR_PATCH_DATABASE. With it, each community has its own database, on the service's MongoDB deployment or on
the one its `uri` names; registries on one deployment share one client (one pool of connections).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pymongo import MongoClient

from worker.errors import StorageUnavailable
from worker.model.tenants import DEFAULT_TENANT
from worker.settings import Settings
from worker.storage.database import Database, connect
from worker.storage.resource_store import VersionHint

log = logging.getLogger("fhir_patch.storage")


@dataclass(frozen=True)
class Registries:
    by_tenant: Mapping[str, Database]

    @classmethod
    def open(cls, settings: Settings, hint_for: Callable[[str], VersionHint] | None = None) -> Registries:
        """Every tenant's Database; `hint_for(tenant)` is the Redis copy hint of that tenant's resources."""
        hint = hint_for or (lambda tenant: None)  # type: ignore[return-value]
        if not settings.tenants:
            return cls({DEFAULT_TENANT: Database.open(settings, hint(DEFAULT_TENANT))})
        clients: dict[str, MongoClient[dict[str, Any]]] = {}
        by_tenant = {}
        for tenant, target in settings.tenants.items():
            uri = target.uri or settings.mongodb_uri
            if uri not in clients:
                clients[uri] = connect(replace(settings, mongodb_uri=uri))
            by_tenant[tenant] = Database.on(clients[uri], target.database, hint(tenant))
        return cls(by_tenant)

    def __getitem__(self, tenant: str) -> Database:
        """A tenant's registry; a tenant no longer configured cannot be served (503: its jobs wait for it)."""
        found = self.by_tenant.get(tenant)
        if found is None:
            raise StorageUnavailable(f"No registry is configured for the community {tenant!r} (FHIR_PATCH_TENANTS)")
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_tenant)

    @property
    def any(self) -> Database:
        """A registry for what is not one tenant's (the default one's, when there are no tenants)."""
        return next(iter(self.by_tenant.values()))

    def ensure_indexes(self) -> None:
        """Each registry's indexes. With several, one that cannot be reached is logged and left (its requests are
        answered 503 until it is back; the index only speeds up the reconciler's scan)."""
        if len(self.by_tenant) == 1:
            self.any.ensure_indexes()
            return
        for tenant, database in self.by_tenant.items():
            try:
                database.ensure_indexes()
            except Exception as exc:  # noqa: BLE001 - any failure of one registry must not stop the others
                log.warning("registry %s not reached at start: %s", tenant, exc, extra={"tenant": tenant})

    def close(self) -> None:
        for client in {id(db.client): db.client for db in self.by_tenant.values()}.values():
            client.close()
