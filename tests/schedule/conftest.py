"""The KeySchedule contract runs on Redis (the real server the test command started) and on the in-memory
implementation (on a fake clock), so the memory twin the service tests use cannot drift from the Lua."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from tests.support.processes import wait_for
from worker.schedule.keys import RedisKeys
from worker.schedule.memory import MemorySchedule
from worker.schedule.port import KeySchedule
from worker.schedule.redis_schedule import RedisSchedule

LEASE = 0.2  # seconds: short, so that expiry on the real Redis is seen quickly


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    schedule: KeySchedule
    now: Callable[[], float]
    lose_everything: Callable[[], None]
    _expire: Callable[[str], None]
    fail_over: Callable[[float], None]  # another server now answers with the same data (a promoted replica)

    def expire_lease(self, key: str) -> None:
        """Let the key's lease run out (on Redis: wait until the server expired it)."""
        self._expire(key)


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemorySchedule(clock=clock)

        def advance(key: str) -> None:
            clock.now += LEASE * 2

        yield Backend(memory, clock, memory.lose_everything, advance, memory.fail_over)
        return
    env: dict[str, str] = request.getfixturevalue("service_env")
    client = redis.Redis.from_url(env["FHIR_PATCH_REDIS_URL"])
    keys = RedisKeys(f"schedule-{uuid.uuid4().hex[:8]}")
    client.set(keys.synced("default"), 1)

    def flush() -> None:
        for name in client.scan_iter(f"{keys.namespace}:*"):
            client.delete(name)

    def expired(key: str) -> None:
        wait_for(lambda: not client.exists(keys.lease(key)), 30, f"the lease of {key} to expire", interval=0.02)

    def promoted(now: float) -> None:  # a promoted replica holds the record its old master wrote
        client.hset(keys.server, mapping={"run_id": "the-old-master", "since": 0})

    try:
        yield Backend(RedisSchedule(client, keys), time.time, flush, expired, promoted)
    finally:
        flush()
        client.close()
