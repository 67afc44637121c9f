"""Draining a key: batching, the redelivery decision, collisions, giving a job up."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.service.conftest import Clock, patch, put, queue
from tests.service.conftest import drainer_of as _drainer
from tests.service.conftest import families as _families
from tests.support.memory_queues import MemoryQueues
from tests.support.memory_stores import MemoryStores
from worker.errors import StorageUnavailable
from worker.model.jobs import JobResult, JobState
from worker.model.versions import StoredVersion
from worker.service.drain import BATCH, Drainer
from worker.settings import Settings


def test_jobs_of_one_key_are_applied_in_order_as_one_batch(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"), *(patch("p", f"f{n}", f"j{n}") for n in range(2, 8)))
    drained = _drainer(settings, stores, queues, clock).drain("default/Patient/p")
    assert (drained.processed, drained.more, drained.held_elsewhere) == (7, False, False)
    assert _families(stores) == ["a", "f2", "f3", "f4", "f5", "f6", "f7"], "one version per job, in queue order"
    assert [w["job"] for w in queues.wakeups.published] == [f"j{n}" for n in range(1, 8)]
    assert [f.job_id for f in queues.schedule.counted] == [f"j{n}" for n in range(1, 8)], "each counted once, in order"
    assert queues.schedule.queues["default/Patient/p"] == [] and "default/Patient/p" not in queues.schedule.leases
    assert queues.copies.newest_version("default/Patient/p") == 7, "the copy follows the last commit"
    assert all(stores.jobs.get(f"j{n}").state == JobState.APPLIED for n in range(1, 8))  # type: ignore[union-attr]


def test_a_batch_is_cut_at_the_batch_size_and_a_failing_job_fails_alone(settings, stores, queues, clock) -> None:
    jobs = [put("p", "a", "j0"), *(patch("p", f"f{n}", f"j{n}") for n in range(1, BATCH + 5))]
    bad = patch("p", "x", "bad")
    bad = replace(bad, request=replace(bad.request, body=b"[{]"))
    queue(stores, queues, *jobs[:10], bad, *jobs[10:])
    drained = _drainer(settings, stores, queues, clock).drain("default/Patient/p")
    assert drained.processed == len(jobs) + 1
    assert stores.jobs.get("bad").state == JobState.FAILED  # type: ignore[union-attr]
    assert stores.jobs.get("bad").result.status == 400  # type: ignore[union-attr]
    assert len(_families(stores)) == len(jobs), "every other job wrote its version"


def test_a_collision_keeps_what_was_committed_before_it_and_stops_the_drain(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"))
    drainer = _drainer(settings, stores, queues, clock)
    drainer.drain("default/Patient/p")
    queue(stores, queues, *(patch("p", f"f{n}", f"j{n}") for n in range(2, 6)))
    # Another writer (a worker that lost its lease and resumed) took version 4 behind our back.
    foreign = StoredVersion("Patient", "p", 4, clock(), '{"resourceType":"Patient","id":"p"}', "other", "update")
    stores.resources.stored["Patient/p/4"] = foreign
    drained = drainer.drain("default/Patient/p")
    assert drained.processed == 2 and not drained.more, "j2, j3 committed; the drain stops at the collision"
    assert [stores.resources.stored[f"Patient/p/{n}"].job_id for n in (2, 3, 4)] == ["j2", "j3", "other"]
    assert queues.schedule.queues["default/Patient/p"] == ["j4", "j5"], "the rest stays queued, for the next holder"
    assert stores.jobs.get("j4").state == JobState.RUNNING, "started, not finished: a redelivery decides"  # type: ignore[union-attr]


def test_a_redelivered_job_that_wrote_its_version_records_that_version(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"), patch("p", "b", "j2"))
    stores.jobs.start("j2", clock())  # a worker started j2, committed version 2, and died before recording
    written = StoredVersion("Patient", "p", 2, clock(), '{"resourceType":"Patient","id":"p"}', "j2", "patch")
    drainer = _drainer(settings, stores, queues, clock)
    queues.schedule.queues["default/Patient/p"].remove("j1")
    stores.resources.stored["Patient/p/1"] = StoredVersion("Patient", "p", 1, clock(), "{}", "j1", "update")
    stores.resources.stored["Patient/p/2"] = written
    drainer.drain("default/Patient/p")
    done = stores.jobs.get("j2")
    assert done is not None and done.state == JobState.APPLIED and done.result.version_id == 2  # type: ignore[union-attr]
    assert "default/Patient/p/3" not in stores.resources.stored, "not applied twice"


def test_a_redelivered_job_that_ended_is_not_recorded_again(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"))
    drainer = _drainer(settings, stores, queues, clock)
    drainer.drain("default/Patient/p")
    # the same job, delivered again
    queues.schedule.arrive("default/Patient/p", "j1", put("p", "a", "j1").to_payload(), 0.0)
    published = len(queues.wakeups.published)
    drainer.drain("default/Patient/p")
    assert len(queues.wakeups.published) == published and len(stores.resources.stored) == 1


def test_a_redelivered_job_that_wrote_nothing_is_applied_now(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"))
    stores.jobs.start("j1", clock())  # started, then the worker died before writing
    _drainer(settings, stores, queues, clock).drain("default/Patient/p")
    assert _families(stores) == ["a"] and stores.jobs.get("j1").state == JobState.APPLIED  # type: ignore[union-attr]


def test_a_cancelled_job_is_left_and_the_next_goes_on(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"), patch("p", "b", "j2"))
    assert stores.jobs.cancel("j1", clock())
    drained = _drainer(settings, stores, queues, clock).drain("default/Patient/p")
    assert drained.processed == 2 and _families(stores) == [], "j2 patches a resource that j1 never created"
    assert stores.jobs.get("j2").result.status == 404  # type: ignore[union-attr]


def test_a_key_held_elsewhere_is_left_to_its_holder(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"))
    queues.schedule.lease_to("default/Patient/p", "w2|x")
    queues.schedule.heartbeat("w2", 3600)
    drained = _drainer(settings, stores, queues, clock).drain("default/Patient/p")
    assert drained.held_elsewhere and drained.processed == 0 and stores.resources.stored == {}


def test_the_lease_of_a_dead_holder_is_taken_over_at_once_and_counts_an_attempt(
    settings, stores, queues, clock
) -> None:
    queue(stores, queues, put("p", "a", "j1"))
    stores.jobs.start("j1", clock())  # the dead worker had started it
    queues.schedule.lease_to("default/Patient/p", "dead|x")
    drained = _gone_aware(settings, stores, queues, clock).drain("default/Patient/p")
    assert drained.processed == 1 and queues.schedule.attempt_causes == {"j1": {"died:dead"}}
    assert stores.jobs.get("j1").state == JobState.APPLIED  # type: ignore[union-attr]


def test_a_job_that_stopped_its_worker_three_times_fails_alone(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"), put("p", "b", "j2"))
    stores.jobs.start("j1", clock())
    queues.schedule.lease_to("default/Patient/p", "dead|x")
    queues.schedule.attempt_causes["j1"] = {"died:w7", "died:w8"}
    drained = _gone_aware(settings, stores, queues, clock).drain("default/Patient/p")
    failed = stores.jobs.get("j1")
    assert failed is not None and failed.result is not None and failed.result.status == 422
    assert "stopped its worker 3 times" in failed.result.outcome["issue"][0]["diagnostics"]  # type: ignore[index]
    assert drained.processed == 2 and _families(stores) == ["b"], "the key goes on with the next job"


def _gone_aware(settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock) -> Drainer:
    return Drainer(settings, stores, queues, clock=clock, holder="w1", holder_gone=lambda h: h == "dead")  # type: ignore[arg-type]


def test_give_up_records_the_version_a_job_wrote_before_it_failed(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"))
    stores.resources.stored["Patient/p/1"] = StoredVersion("Patient", "p", 1, clock(), "{}", "j1", "update")
    assert _drainer(settings, stores, queues, clock).give_up("default/Patient/p", 3) == "j1"
    assert stores.jobs.get("j1").result == JobResult(201, 1, stores.resources.stored["Patient/p/1"].last_updated)  # type: ignore[union-attr]


def test_leases_an_outage_kept_from_being_released_are_given_up_when_redis_answers(
    settings, stores, queues, clock
) -> None:
    queue(stores, queues, put("p", "a", "j1"), patch("p", "b", "j2"))
    drainer = _drainer(settings, stores, queues, clock)
    schedule = queues.schedule
    real_next, real_release = schedule.next_jobs, schedule.release
    calls = {"next": 0}

    def next_then_outage(*args, **kwargs):  # the first step takes the lease; then Redis goes away
        calls["next"] += 1
        if calls["next"] > 1:
            raise StorageUnavailable("Redis: connection refused")
        return real_next(*args, **kwargs)

    def refused(key, token):
        raise StorageUnavailable("Redis: connection refused")

    schedule.next_jobs, schedule.release = next_then_outage, refused
    with pytest.raises(StorageUnavailable):
        drainer.drain("default/Patient/p")
    assert "default/Patient/p" in schedule.leases, "the lease outlived the drain (a promoted replica has it)"
    schedule.next_jobs, schedule.release = real_next, real_release  # Redis answers again
    assert drainer.release_pending() == ["default/Patient/p"], "given up, and it has jobs to offer again"
    assert "default/Patient/p" not in schedule.leases and drainer.release_pending() == []
