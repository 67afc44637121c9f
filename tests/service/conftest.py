"""Unit tests of the service logic on in-memory doubles (tests/support/memory_*.py): no services, milliseconds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.memory_queues import MemoryQueues
from tests.support.memory_stores import MemoryStores
from worker.model.access import Actor
from worker.model.jobs import Action, Job, JobRequest, JobState
from worker.service.drain import Drainer
from worker.settings import Settings

START = datetime(2026, 11, 30, 12, tzinfo=UTC)


class Clock:
    """A clock that moves a millisecond at each reading (so every step has its own time)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def put(resource_id: str, family: str, job_id: str, resource_type: str = "Patient") -> Job:
    body = json.dumps({"resourceType": resource_type, "id": resource_id, "name": [{"family": family}]}).encode()
    request = JobRequest(
        Action.UPDATE, resource_type, resource_id, body, "application/fhir+json", actor=Actor("alice", "c")
    )
    return Job(job_id, request, JobState.ACCEPTED, START)


def patch(resource_id: str, family: str, job_id: str, resource_type: str = "Patient") -> Job:
    body = json.dumps([{"op": "replace", "path": "/name/0/family", "value": family}]).encode()
    request = JobRequest(
        Action.PATCH, resource_type, resource_id, body, "application/json-patch+json", actor=Actor("alice", "c")
    )
    return Job(job_id, request, JobState.ACCEPTED, START)


def drainer_of(settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock) -> Drainer:
    """A drainer on the doubles, holding leases as worker "w1"."""
    return Drainer(settings, stores, queues, clock=clock, holder="w1")  # type: ignore[arg-type]


def families(stores: MemoryStores, key: str = "Patient/p") -> list[str]:
    """The family names of the key's versions, oldest first."""
    versions = sorted((v for v in stores.resources.stored.values() if v.key == key), key=lambda v: v.version_id)
    return [v.resource()["name"][0]["family"] for v in versions]


def queue(stores: MemoryStores, queues: MemoryQueues, *jobs: Job) -> None:
    """Record and queue jobs as the submission path does."""
    for job in jobs:
        stores.jobs.accept(job)
        queues.schedule.arrive(job.queue_key, job.id, job.to_payload(), 0.0)


@pytest.fixture()
def stores() -> MemoryStores:
    return MemoryStores()


@pytest.fixture()
def queues() -> MemoryQueues:
    return MemoryQueues()


@pytest.fixture()
def settings() -> Settings:
    return Settings()


@pytest.fixture()
def clock() -> Clock:
    return Clock()
