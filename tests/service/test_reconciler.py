"""The reconciler's decisions on in-memory doubles: which keys are stalled, which jobs are lost, which callbacks are
owed, and one pass at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.service.conftest import START, put, queue
from tests.support.memory_queues import MemoryAdmission, MemoryQueues, RecordedDrains
from tests.support.memory_stores import MemoryStores
from worker.model.jobs import JobResult, result_event
from worker.schedule import KeyView, Mark
from worker.service.reconciler import Reconciler
from worker.settings import Settings
from worker.submission.submitter import Submitter

LEASE = 30.0
NOW = START.timestamp()


class _Setup:
    def __init__(self, waiting: int = 0) -> None:
        self.settings = Settings(lease_seconds=LEASE, visibility_timeout_seconds=3600, reconcile_interval_seconds=1.0)
        self.stores, self.queues = MemoryStores(), MemoryQueues()
        self.queues.schedule.ready = ["default/Patient/waiting"] * waiting
        self.restores = RecordedDrains()
        self.drains = RecordedDrains()
        self.callbacks: list[str] = []
        submitter = Submitter(
            self.stores,  # type: ignore[arg-type]
            self.queues.schedule,
            MemoryAdmission(),  # type: ignore[arg-type]
            self.restores,
            self.queues.counters.count_group,
        )
        self.reconciler = Reconciler(
            self.settings,
            self.stores,  # type: ignore[arg-type]
            self.queues,  # type: ignore[arg-type]
            submitter,
            self.drains,
            lambda job_id, tenant: self.callbacks.append(job_id),
        )


def _view(depth: int, leased: bool, mark: str | None) -> KeyView:
    return KeyView(depth, leased, Mark.decode(mark))


@pytest.mark.parametrize(
    ("state", "nothing_waits", "stalled", "why"),
    [
        (_view(0, False, None), True, False, "nothing queued"),
        (_view(3, True, None), True, False, "a drain holds the lease"),
        (_view(3, False, None), True, True, "no message outstanding for longer than a lease (a parked key)"),
        (_view(3, False, f"t:w-live:{NOW - 2 * LEASE}"), True, False, "taken by a process that is alive"),
        (_view(3, False, f"t:w-dead:{NOW - 2 * LEASE}"), True, True, "taken by a process that is gone"),
        (_view(3, False, f"t:w-dead:{NOW - 1}"), True, False, "taken a moment ago"),
        (_view(3, False, f"s:{NOW - 2 * LEASE}"), True, True, "offered long ago, and nothing waits for a drainer"),
        (_view(3, False, f"s:{NOW - 2 * LEASE}"), False, False, "offered, and it waits behind others for a drainer"),
        (_view(3, False, f"s:{NOW - 4000}"), False, True, "sent longer than the visibility timeout ago"),
        (_view(3, False, f"r:{NOW + 10}"), True, False, "a retry not due yet"),
        (_view(3, False, f"r:{NOW - 2 * LEASE}"), True, True, "a retry due long ago, and nothing waits"),
        (_view(3, False, f"r:{NOW - 2 * LEASE}"), False, False, "a retry due, waiting behind others"),
    ],
)
def test_which_keys_are_stalled(state: KeyView, nothing_waits: bool, stalled: bool, why: str) -> None:
    setup = _Setup()
    setup.queues.schedule.heartbeat("w-live", 3600)
    assert setup.reconciler._stalled(state, NOW, nothing_waits) is stalled, why


@pytest.mark.parametrize(
    ("state", "failed_over_ago", "stalled", "why"),
    [
        (_view(3, False, f"t:w-live:{NOW - 3 * LEASE}"), 2 * LEASE, True, "taken before a failover, by a live process"),
        (_view(3, False, f"s:{NOW - 3 * LEASE}"), 2 * LEASE, True, "offered before a failover, others waiting"),
        (_view(3, False, f"t:w-live:{NOW - 3 * LEASE}"), 1.0, False, "a failover seen a moment ago"),
        (_view(3, True, f"t:w-live:{NOW - 3 * LEASE}"), 2 * LEASE, False, "a drain renewed its lease since"),
        (_view(3, False, f"t:w-live:{NOW - LEASE}"), 2 * LEASE, False, "taken after the failover, by a live process"),
    ],
)
def test_marks_from_before_a_redis_failover_are_revived_once_unleased_past_a_grace(
    state: KeyView, failed_over_ago: float, stalled: bool, why: str
) -> None:
    setup = _Setup(waiting=5)  # under load: others wait for a drainer, so only the failover rule can revive
    setup.queues.schedule.heartbeat("w-live", 3600)
    setup.queues.schedule.fail_over(NOW - failed_over_ago)
    failed_over_at = setup.queues.schedule.served_since(NOW)
    assert setup.reconciler._stalled(state, NOW, False, failed_over_at) is stalled, why


def test_a_pass_revives_stalled_keys_only() -> None:
    setup = _Setup()
    queue(setup.stores, setup.queues, put("p", "a", "j1"), put("q", "b", "j2"))
    setup.queues.schedule.marks["default/Patient/p"] = f"s:{NOW - 2 * LEASE}"  # lost on the way to a drainer
    setup.queues.schedule.marks["default/Patient/q"] = f"s:{NOW - 1}"  # sent a moment ago
    done = setup.reconciler.run_once(START)
    assert done.revived_keys == 1 and setup.drains.sent == ["default/Patient/p"]
    assert setup.queues.schedule.marks["default/Patient/p"] == f"s:{NOW}", "revived counts as sent again"


def test_a_request_that_died_holding_a_claim_leaves_its_key_to_the_reconciler_once_its_lease_expired() -> None:
    setup = _Setup()
    schedule = setup.queues.schedule
    schedule.clock = lambda: NOW - 2 * LEASE  # a synchronous request claimed the key then, and died
    assert schedule.claim("default/Patient/p", schedule.new_token("host:api-1"), LEASE, NOW - 2 * LEASE)
    queue(setup.stores, setup.queues, put("p", "a", "j1"))  # queued behind the claim, with no offer of its own
    assert setup.reconciler.run_once(START).revived_keys == 0, "the claim's lease still holds the key"
    schedule.clock = lambda: NOW
    schedule.locks.clear()  # the next pass (one at a time: the first one's lock still stands)
    done = setup.reconciler.run_once(START)
    assert done.revived_keys == 1 and setup.drains.sent == ["default/Patient/p"]


def test_jobs_in_flight_that_no_queue_holds_are_restored_in_order_and_nothing_else() -> None:
    setup = _Setup()
    old = START - timedelta(minutes=5)
    lost, queued, ended = put("p", "a", "lost"), put("q", "b", "queued"), put("r", "c", "ended")
    for job in (lost, queued, ended):
        setup.stores.jobs.accept(replace(job, accepted_at=old))
    setup.queues.schedule.arrive(queued.queue_key, queued.id, queued.to_payload(), 0.0)
    setup.stores.jobs.start("ended", old)
    setup.stores.jobs.finish_many([result_event(ended, JobResult(200, 1, old), old)])
    done = setup.reconciler.run_once(START)
    assert done.restored_jobs == 1 and setup.queues.schedule.queues["default/Patient/p"] == ["lost"]
    assert setup.restores.sent == ["default/Patient/p"], "its key gets a drain message"
    assert setup.queues.schedule.counts.get("accepted", 0) == 2, (
        "counted now: its request died before the enqueue that counts it"
    )


def test_a_job_younger_than_the_grace_period_is_left_alone() -> None:
    setup = _Setup()
    setup.stores.jobs.accept(put("p", "a", "new"))  # recorded a moment ago; its queueing is on its way
    assert setup.reconciler.run_once(START + timedelta(seconds=1)).restored_jobs == 0


def test_owed_callbacks_are_sent_again_unless_one_is_scheduled() -> None:
    setup = _Setup()
    long_ago = START - timedelta(minutes=5)
    for job_id in ("cb1", "cb2"):
        job = put("p", "a", job_id)
        job = replace(job, callback_url="https://127.0.0.1/hook")
        setup.stores.jobs.accept(job)
        setup.stores.jobs.finish_many([result_event(job, JobResult(200, 1, long_ago), long_ago)])
    setup.queues.counters.callback_scheduled("cb2", 10)
    assert setup.reconciler.run_once(START).callbacks_resent == 1 and setup.callbacks == ["cb1"]


def test_one_pass_at_a_time() -> None:
    setup = _Setup()
    setup.queues.schedule.lock(setup.queues.keys.reconciler_lock, 1000)  # another process's pass
    assert setup.reconciler.run_once(START).skipped


def test_a_failover_is_reported_once_so_that_a_pass_comes_soon() -> None:
    setup = _Setup()
    assert not setup.reconciler.failed_over(START), "the first server"
    setup.queues.schedule.fail_over(NOW + 5)
    later = START + timedelta(seconds=6)
    assert setup.reconciler.failed_over(later) and not setup.reconciler.failed_over(later), "once"


@pytest.mark.parametrize(
    ("set_ago", "revived", "why"),
    [
        (10.0, 1, "set before the failover and never renewed: given up by its token, and the key offered again"),
        (1.0, 0, "renewed since the failover: left to its holder"),
    ],
)
def test_leases_after_a_failover(set_ago: float, revived: int, why: str) -> None:
    setup = _Setup(waiting=5)
    schedule = setup.queues.schedule
    schedule.clock = lambda: NOW  # leases run out on the reconciler's clock
    queue(setup.stores, setup.queues, put("p", "a", "j1"))
    key = "default/Patient/p"
    schedule.heartbeat("w-live", 3600)
    schedule.marks[key] = f"t:w-live:{NOW - 10}"
    schedule.leases[key] = ("w-live|t", NOW + LEASE - set_ago)
    schedule.fail_over(NOW - 5)  # the promoted replica has the lease; its holder may have moved on
    assert setup.reconciler.revive_after_failover(START) == revived, why
    assert (key in schedule.leases) is (not revived) and setup.drains.sent == [key] * revived, why
