"""One MongoDB database handle holding the stores, opened from Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pymongo import MongoClient

from worker.model.stores import Groups, Identifiers, Jobs, Resources
from worker.settings import Settings
from worker.storage.command_log import CommandRecorder
from worker.storage.elections import retry_for
from worker.storage.group_store import GroupStore
from worker.storage.identifier_index import IdentifierIndex
from worker.storage.job_store import JobStore
from worker.storage.resource_store import ResourceStore, VersionHint

log = logging.getLogger("fhir_patch.storage")
_TIMEOUTS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 2000}


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
        return cls.on(connect(settings), settings.database, hint)

    @classmethod
    def on(cls, client: MongoClient[dict[str, Any]], name: str, hint: VersionHint | None = None) -> Database:
        """The stores of database `name` on a client `connect` made (several registries may share one)."""
        db = client[name]
        jobs = JobStore(db)
        return cls(client, ResourceStore(db, hint, jobs.committed), jobs, GroupStore(db), IdentifierIndex(db))

    def ensure_indexes(self) -> None:
        self.resources.ensure_indexes()
        self.jobs.ensure_indexes()

    def close(self) -> None:
        self.client.close()


def connect(settings: Settings) -> MongoClient[dict[str, Any]]:
    """A client of `settings.mongodb_uri` with the service's write concern, read preference and retries."""
    listeners = [CommandRecorder(settings.mongodb_command_log)] if settings.mongodb_command_log else []
    concern = settings.mongodb_write_concern
    # Every acknowledgement (a 200, a 202) rests on writes MongoDB made durable as the write concern says;
    # reads that decide a commit go to the primary; pymongo retries a write or read once across a failover,
    # elections.py for longer. Explicit, so that no server-side default (w:1 with an arbiter) decides.
    given = {name.lower() for name in parse_qs(urlsplit(settings.mongodb_uri).query)}
    timeouts: dict[str, Any] = {n: ms for n, ms in _TIMEOUTS.items() if n.lower() not in given}  # the URI's win
    client: MongoClient[dict[str, Any]] = MongoClient(
        settings.mongodb_uri,
        tz_aware=True,
        connect=False,
        **timeouts,
        event_listeners=listeners,
        w=concern.w,
        journal=concern.j,
        wTimeoutMS=concern.wtimeout_ms,
        readPreference="primary",
        retryWrites=True,
        retryReads=True,
    )
    retry_for(settings.mongodb_retry_seconds)
    log.info(
        "mongodb write concern %s, reads from the primary, elections ridden out for %gs",
        concern,
        settings.mongodb_retry_seconds,
        extra={"write_concern": str(concern)},
    )
    return client
