"""Arrivals against the real Redis: jobs are held while Redis is out of sync, and the restore puts every job in
acceptance order (rebuilt jobs, then held ones in arrival order, then anything enqueued after)."""

from __future__ import annotations

import uuid

import pytest
import redis

from worker.ordering.arrivals import Arrival, Arrivals
from worker.ordering.keys import RedisKeys


@pytest.fixture()
def arrivals(service_env: dict[str, str]) -> tuple[Arrivals, redis.Redis, RedisKeys]:
    client = redis.Redis.from_url(service_env["FHIR_PATCH_REDIS_URL"])
    keys = RedisKeys(f"arrivals-{uuid.uuid4().hex[:8]}")
    return Arrivals(client, keys), client, keys


def _queue(client: redis.Redis, keys: RedisKeys, key: str) -> list[str]:
    return [v.decode() for v in client.lrange(keys.queue(key), 0, -1)]


def test_held_until_synced_then_in_acceptance_order(arrivals: tuple[Arrivals, redis.Redis, RedisKeys]) -> None:
    queue, client, keys = arrivals
    assert queue.enqueue("Patient/a", "j3", "p3", 1.0) is Arrival.HELD, "no marker: Redis may have lost jobs"
    assert queue.enqueue_transaction(["Patient/a", "Patient/b"], "t4", "p4", 1.0) is None
    assert _queue(client, keys, "Patient/a") == []
    # The restore: MongoDB's jobs in flight in acceptance order (j1, j2 and the held j3), then the held ones.
    assert queue.rebuild("Patient/a", [("j1", "p1"), ("j2", "p2"), ("j3", "p3")], 2.0) is True
    assert sorted(queue.finish_sync(2.0)) == ["Patient/b"]  # Patient/a's drain was sent with the rebuild
    assert queue.enqueue("Patient/a", "j5", "p5", 3.0) is Arrival.QUEUED
    assert queue.enqueue("Patient/a", "j3", "p3", 3.0) is Arrival.QUEUED  # already queued: not twice
    assert _queue(client, keys, "Patient/a") == ["j1", "j2", "j3", "t4", "j5"]
    assert _queue(client, keys, "Patient/b") == ["t4"]
    assert queue.synced()


def test_rebuild_waits_for_a_drain_holding_the_key(arrivals: tuple[Arrivals, redis.Redis, RedisKeys]) -> None:
    queue, client, keys = arrivals
    client.set(keys.lease("Patient/c"), "token")
    assert queue.rebuild("Patient/c", [("j1", "p1")], 1.0) is None
    client.delete(keys.lease("Patient/c"))
    assert queue.rebuild("Patient/c", [("j1", "p1")], 1.0) is True
