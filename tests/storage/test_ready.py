"""The ready list and its drainers against the real Redis: messages only while fewer drainers live than the cap, a
retiring drainer never leaves an item unserved, a dead drainer stops counting after a lease, a resumed drainer
finds its item, and a death holding several leases counts one attempt."""

from __future__ import annotations

import uuid

import pytest
import redis

from worker.ordering.keys import RedisKeys
from worker.ordering.leases import Leases
from worker.ordering.ready import DrainerLimits, ReadyKeys

LIMITS = DrainerLimits(cap=2, stale_seconds=2.0)
Parts = tuple[ReadyKeys, Leases, redis.Redis, RedisKeys]


@pytest.fixture()
def parts(service_env: dict[str, str]) -> Parts:
    client = redis.Redis.from_url(service_env["FHIR_PATCH_REDIS_URL"])
    keys = RedisKeys(f"ready-{uuid.uuid4().hex[:8]}")
    return ReadyKeys(client, keys), Leases(client, keys), client, keys


def test_drainers_are_started_only_up_to_the_cap(parts: Parts) -> None:
    ready, _, _, _ = parts
    assert ready.offer([], 10.0, LIMITS) == [], "nothing waits: no drainer"
    first = ready.offer(["Patient/a"], 10.0, LIMITS)
    assert len(first) == 1, "one item waits: one drainer, not the cap"
    assert len(ready.offer(["Patient/b", "Patient/c"], 10.0, LIMITS)) == 1
    assert ready.offer(["Patient/d"], 10.0, LIMITS) == [], "two drainers live: the item waits for them"
    assert ready.waiting() == 4


def test_a_drainer_takes_its_share_in_order_and_marks_them_taken(parts: Parts) -> None:
    ready, leases, client, keys = parts
    for key in ("Patient/a", "Patient/b", "Patient/c", "Patient/d", "Patient/e"):
        client.set(keys.sched(key), "s:1")
    first, second = ready.offer(["Patient/a", "Patient/b", "Patient/c", "Patient/d"], 10.0, LIMITS)
    assert ready.offer(["Patient/e"], 10.0, LIMITS) == []
    assert ready.take(first, "host:1", 11.0) == [["Patient/a"], ["Patient/b"], ["Patient/c"]], "5 of 2"
    assert leases.state("Patient/b").taken_by == "host:1"
    assert ready.resumed(first) == ["Patient/a", "Patient/b", "Patient/c"], "for a message that comes back"
    assert ready.take(second, "host:2", 11.0) == [["Patient/d"]], "2 waiting, 2 drainers"
    assert ready.take(first, "host:1", 11.0) == [["Patient/e"]]
    assert ready.take(first, "host:1", 11.0) == [] and ready.resumed(first) == []
    assert int(client.hget(keys.counts, "drains") or 0) == 5


def test_a_retiring_drainer_never_leaves_an_item_behind(parts: Parts) -> None:
    ready, _, _, _ = parts
    limits = DrainerLimits(1, 2.0)
    [drainer] = ready.offer(["Patient/a"], 10.0, limits)
    assert ready.take(drainer, "host:1", 10.0) == [["Patient/a"]]
    assert ready.offer(["Patient/b"], 10.0, limits) == [], "the one drainer will look again"
    assert ready.take(drainer, "host:1", 10.0, "retire") == [["Patient/b"]], "retiring takes what came meanwhile"
    assert ready.take(drainer, "host:1", 10.0, "retire") == []
    assert len(ready.offer(["Patient/c"], 10.0, limits)) == 1, "retired: the next offer starts a drainer"


def test_a_silent_drainer_stops_counting_after_a_lease(parts: Parts) -> None:
    ready, _, _, _ = parts
    limits = DrainerLimits(1, 2.0)
    assert len(ready.offer(["Patient/a"], 10.0, limits)) == 1
    assert ready.offer(["Patient/b"], 11.0, limits) == []
    assert len(ready.offer([], 12.5, limits)) == 1, "its process died: a new drainer serves what waits"


def test_a_transaction_is_one_item_and_a_key_offered_twice_comes_once(parts: Parts) -> None:
    ready, _, _, _ = parts
    [drainer] = ready.offer(["Patient/a Patient/b"], 10.0, LIMITS)
    item = ready.wait(1.0)
    assert item == "Patient/a Patient/b"
    assert ready.take(drainer, "host:1", 10.0, "retire", item) == [["Patient/a", "Patient/b"]]
    assert ready.offer(["Patient/c", "Patient/d Patient/c"], 11.0, DrainerLimits(1, 2.0)) == [], "one lives"
    assert ready.take(drainer, "host:1", 11.0) == [["Patient/d", "Patient/c"]], "c once, within its transaction"


def test_one_death_is_one_attempt(parts: Parts) -> None:
    _, leases, _, _ = parts
    assert [leases.attempt("t1", "died:host:7") for _ in range(3)] == [1, 1, 1], "three keys of one transaction"
    assert leases.attempt("t1", "died:host:8") == 2
