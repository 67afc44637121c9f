"""The one drain loop on the memory twin and a fake clock: a drainer takes ready keys, retries a failed drain
through the ready list when it is due (lingering for it), retires when nothing is left, and hands over after its
turn. Milliseconds, no services."""

from __future__ import annotations

from tests.service.conftest import Clock, put, queue
from tests.service.conftest import drainer_of as _drainer
from tests.service.conftest import families as _families
from tests.support.memory_queues import MemoryQueues
from tests.support.memory_stores import MemoryStores
from worker.schedule import DrainerLimits
from worker.schedule.memory import MemorySchedule
from worker.service.drain import Drained, Drainer
from worker.service.loop import DRAINER_SECONDS, LINGER_SECONDS, DrainLoop, LoopParts
from worker.settings import Settings

LIMITS = DrainerLimits(cap=2, stale_seconds=60.0)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Loop:
    """A loop on the doubles; `started` records the drainers it sent a message for."""

    def __init__(self, settings: Settings, stores: MemoryStores, queues: MemoryQueues, drainer: Drainer | None = None):
        self.time = FakeTime()
        queues.schedule = MemorySchedule(clock=self.time, sleep=self.time.sleep, copy_of=queues.copies.newest_copy)
        self.schedule = queues.schedule
        self.drainer = drainer or _drainer(settings, stores, queues, Clock())
        self.started: list[str] = []
        parts = LoopParts(self.schedule, self.drainer, "host:1", lambda keys: None, self.started.append, _no_count)
        self.loop = DrainLoop(parts, clock=self.time, monotonic=self.time)

    def offer(self, *keys: str) -> str:
        return self.schedule.offer(list(keys), self.time(), LIMITS)[0]


def _no_count(name: str, n: int) -> None:
    pass


def test_a_drainer_drains_what_is_ready_and_retires_after_the_linger(settings, stores, queues) -> None:
    setup = _Loop(settings, stores, queues)
    queue(stores, queues, put("p", "a", "j1"), put("q", "b", "j2"))
    drainer = setup.offer("default/Patient/p", "default/Patient/q")
    started = setup.time()
    assert setup.loop.run(drainer) == 2
    assert _families(stores) == ["a"] and _families(stores, "Patient/q") == ["b"]
    assert drainer not in setup.schedule.drainers, "retired: the next offer starts a drainer"
    assert setup.time() - started == LINGER_SECONDS and setup.started == [], "no message of its own"


def test_a_failed_drain_is_retried_through_the_ready_list_when_due(settings, stores, queues) -> None:
    real = _drainer(settings, stores, queues, Clock())
    failures = [RuntimeError("a bug, once")]

    class FailsOnce(Drainer):
        def __init__(self) -> None:
            pass

        def drain(self, key: str) -> Drained:
            if failures:
                raise failures.pop()
            return real.drain(key)

        def give_up(self, key: str, attempts: int, result: object = None) -> str | None:
            raise AssertionError("one failure is not enough to give a job up")

    setup = _Loop(settings, stores, queues, FailsOnce())
    real._schedule = setup.schedule  # the real drainer drains on the loop's schedule
    queue(stores, queues, put("p", "a", "j1"))
    drainer = setup.offer("default/Patient/p")
    started = setup.time()
    assert setup.loop.run(drainer) == 1, "drained on its retry, by the same drainer"
    assert _families(stores) == ["a"]
    assert setup.schedule.attempt_causes["j1"] and len(setup.schedule.attempt_causes["j1"]) == 1
    waited = setup.time() - started
    assert 1.0 <= waited <= 1.0 + 2 * LINGER_SECONDS, f"retried when due (after 1 s), not later: {waited}"
    assert setup.schedule.due == {} and drainer not in setup.schedule.drainers


def test_a_drainer_hands_over_to_a_message_of_its_own_after_its_turn(settings, stores, queues) -> None:
    setup = _Loop(settings, stores, queues)
    keys = [f"default/Patient/k{n}" for n in range(8)]
    queue(stores, queues, *(put(f"k{n}", "a", f"j{n}") for n in range(8)))
    drain = setup.drainer.drain

    def slow(key: str) -> Drained:
        setup.time.sleep(1.0)  # each key takes a second of the drainer's turn
        return drain(key)

    setup.drainer.drain = slow  # type: ignore[method-assign]
    setup.drainer.drain_together = lambda keys: {}  # type: ignore[method-assign]
    drainer = setup.offer(*keys[:4])
    setup.schedule.offer(keys[4:], setup.time(), LIMITS)
    processed = setup.loop.run(drainer)
    assert setup.started == [drainer], "it goes on from a new message, keeping its place in the count"
    assert drainer in setup.schedule.drainers and setup.schedule.resumed(drainer) == []
    assert processed >= DRAINER_SECONDS and processed + setup.schedule.waiting() == 8, "the rest waits for it"
