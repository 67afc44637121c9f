"""An API process killed at every step of a submission: what its client was told stays true.

The dying process is simulated faithfully: at the crash point it stops, and nothing it would do afterwards (not
even the clean-up of an `except` or `finally`) reaches a store. Then a live process gets the client's retry (same
Idempotency-Key) and the client's next job on the same resource. Whatever the crash point:
- the retry is answered with one job (the first request's, or a new one), never refused for good;
- that job stands in the resource's queue, exactly once, before the next job: FIFO holds for every job whose
  acknowledgement the client received.
Run on the in-memory doubles and on the real Redis and MongoDB-protocol server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests.service.conftest import put
from tests.support.memory_queues import MemoryAdmission, MemoryQueues, RecordedDrains
from tests.support.memory_stores import MemoryStores
from worker.model.jobs import Job
from worker.ordering import KeyQueues
from worker.ordering.admission import Admission
from worker.settings import Settings
from worker.storage import Database
from worker.submission.submitter import Submission, Submitter

_PLAIN = (str, int, float, bool, bytes, dict, list, tuple, type(None))


class Killed(BaseException):
    """The process died here (SIGKILL): no code of it runs any more."""


class Fuse:
    """Counts the calls a process makes into its stores; at call number `at` the process dies."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls: list[str] = []
        self.blown = False

    def step(self, name: str) -> None:
        if self.blown or len(self.calls) == self.at:
            self.blown = True
            raise Killed(name)
        self.calls.append(name)


class Dying:
    """A store, queue or counter as a process that may die sees it: every method call goes through its fuse."""

    def __init__(self, target: Any, fuse: Fuse) -> None:
        self._target, self._fuse = target, fuse

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if callable(value):

            def call(*args: Any, **kwargs: Any) -> Any:
                self._fuse.step(name)
                return value(*args, **kwargs)

            return call
        return value if isinstance(value, _PLAIN) else Dying(value, self._fuse)


@dataclass
class Backends:
    """The stores and queues two API processes share, and how to read a resource's queue."""

    stores: Any
    schedule: Any
    admission: Any
    count_group: Callable[[str, int, int], None]
    queue_of: Callable[[str], list[str]]

    def submitter(self, fuse: Fuse | None = None) -> Submitter:
        def wrap(target: Any) -> Any:
            return target if fuse is None else Dying(target, fuse)

        return Submitter(
            wrap(self.stores),
            wrap(self.schedule),
            wrap(self.admission),
            wrap(RecordedDrains()),
            self.count_group,
        )


@pytest.fixture(params=["memory", "redis+mongodb"])
def backends(request: pytest.FixtureRequest) -> Iterator[Backends]:
    if request.param == "memory":
        queues = MemoryQueues()
        yield Backends(
            MemoryStores(),
            queues.schedule,
            MemoryAdmission(),
            queues.counters.count_group,
            lambda key: list(queues.schedule.queues.get(key, [])),
        )
        return
    settings: Settings = request.getfixturevalue("isolated_settings")
    database = Database.open(settings)
    client = redis.Redis.from_url(settings.redis_url)
    real = KeyQueues(client, settings.namespace)
    client.set(real.keys.synced("default"), 1)  # in sync, as the reconciler leaves a fresh deployment
    try:
        yield Backends(
            database,
            real.schedule,
            Admission(client, settings.namespace, 1000, 10_000),
            real.counters.count_group,
            lambda key: [v.decode() for v in client.lrange(real.keys.queue(key), 0, -1)],
        )
    finally:
        database.client.drop_database(settings.database)
        database.close()
        for name in client.scan_iter(f"{settings.namespace}:*"):
            client.delete(name)
        client.close()


def _submission(job: Job, key: str | None) -> Submission:
    return Submission(job.request, f"digest-{job.request.resource_id}", idempotency_key=key, shown_key=key)


def _steps_of_one_submission(backends: Backends) -> list[str]:
    fuse = Fuse(at=10_000)
    backends.submitter(fuse).submit(_submission(put("probe", "a", "probe"), "probe-key"), "probe")
    return fuse.calls


def test_an_api_killed_at_any_step_of_a_submission_leaves_fifo_and_its_idempotency_key_intact(
    backends: Backends,
) -> None:
    steps = _steps_of_one_submission(backends)
    assert steps == ["admit", "remember_key", "accept", "arrive", "send"], steps
    for at in range(len(steps) + 1):
        resource = f"p{at}"
        first = put(resource, "a", f"first-{at}")
        with pytest.raises(Killed) if at < len(steps) else _no_crash():
            backends.submitter(Fuse(at)).submit(_submission(first, f"k{at}"), first.id)
        live = backends.submitter()
        retried, _ = live.submit(_submission(put(resource, "a", f"retry-{at}"), f"k{at}"), f"retry-{at}")
        assert retried.id in (first.id, f"retry-{at}"), f"killed before {steps[at : at + 1]}: {retried.id}"
        again, new = live.submit(_submission(put(resource, "a", f"again-{at}"), f"k{at}"), f"again-{at}")
        assert (again.id, new) == (retried.id, False), "once answered, the key keeps its job"
        later, _ = live.submit(_submission(put(resource, "b", f"later-{at}"), None), f"later-{at}")
        queue = backends.queue_of(first.queue_key)
        assert queue == [retried.id, later.id], f"killed before {steps[at : at + 1]}: queue {queue}"


def test_a_feed_block_resent_after_its_api_died_is_queued_in_line_order_before_the_next_block(
    backends: Backends,
) -> None:
    block = [(n, put("f", str(n), f"G-{n:07d}")) for n in (1, 2, 3)]
    stores = backends.stores
    stores.groups.open("G", "feed", block[0][1].accepted_at)
    for at in range(2):  # killed before the block is recorded, or after (before it is queued)
        fuse = Fuse(at)
        with pytest.raises(Killed):
            backends.submitter(fuse).submit_entries("G", block, [], "c", partial=True)
    taken = backends.submitter().submit_entries("G", block, [], "c", partial=True)
    assert taken.queued == [job.id for _, job in block], "lines recorded by the dead attempt are queued now"
    nxt = backends.submitter().submit_entries("G", [(4, put("f", "4", "G-0000004"))], [], "c", partial=True)
    assert backends.queue_of("default/Patient/f") == [job.id for _, job in block] + nxt.queued
    again = backends.submitter().submit_entries("G", block, [], "c", partial=True)
    assert again.queued == [] and backends.queue_of("default/Patient/f") == [f"G-{n:07d}" for n in (1, 2, 3, 4)]


class _no_crash:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
