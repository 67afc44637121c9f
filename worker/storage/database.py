"""One MongoDB database handle holding the stores, opened from Settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient

from worker.model.stores import Groups, Identifiers, Jobs, Resources
from worker.settings import Settings
from worker.storage.command_log import CommandRecorder
from worker.storage.group_store import GroupStore
from worker.storage.identifier_index import IdentifierIndex
from worker.storage.job_store import JobStore
from worker.storage.resource_store import ResourceStore, VersionHint


@dataclass(frozen=True)
class Database:
    client: MongoClient[dict[str, Any]]
    resources: Resources
    jobs: Jobs
    groups: Groups
    identifiers: Identifiers

    @classmethod
    def open(cls, settings: Settings, hint: VersionHint | None = None) -> Database:
        """Connect (lazily, so it is safe before a fork) and bind the stores to `settings.database`.

        `hint` reads and raises the newest-version hint kept in Redis (see ResourceStore)."""
        listeners = [CommandRecorder(settings.mongodb_command_log)] if settings.mongodb_command_log else []
        client: MongoClient[dict[str, Any]] = MongoClient(
            settings.mongodb_uri,
            tz_aware=True,
            connect=False,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=2000,
            event_listeners=listeners,
        )
        db = client[settings.database]
        jobs = JobStore(db)
        return cls(
            client,
            ResourceStore(db, hint, jobs.committed),
            jobs,
            GroupStore(db),
            IdentifierIndex(db),
        )

    def ensure_indexes(self) -> None:
        self.resources.ensure_indexes()
        self.jobs.ensure_indexes()

    def close(self) -> None:
        self.client.close()
