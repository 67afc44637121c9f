"""The one submission path on in-memory doubles: admitted, recorded, queued, drained; refusals leave nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.service.conftest import put
from tests.support.memory_queues import MemoryAdmission, MemoryQueues, RecordedDrains
from tests.support.memory_stores import MemoryStores
from worker.errors import IdempotencyKeyReused, ServiceBusy, StorageUnavailable, TooManyUnfinished
from worker.model.jobs import Action, JobResult, JobState, result_event
from worker.submission.submitter import Submission, Submitter


class _Setup:
    def __init__(self, per_client: int = 1000) -> None:
        self.stores, self.queues, self.drains = MemoryStores(), MemoryQueues(), RecordedDrains()
        self.admission = MemoryAdmission(per_client=per_client)
        self.submitter = Submitter(
            self.stores,  # type: ignore[arg-type]
            self.queues.schedule,
            self.admission,  # type: ignore[arg-type]
            self.drains,
            self.queues.counters.count_group,
        )


def _submission(job_id: str, family: str = "a", key: str | None = None) -> Submission:
    return Submission(put("p", family, job_id).request, f"digest-{family}", idempotency_key=key, shown_key=key)


def test_a_job_is_recorded_queued_and_its_key_drained_once() -> None:
    setup = _Setup()
    setup.submitter.submit(_submission("j1"), "j1")
    setup.submitter.submit(_submission("j2"), "j2")
    assert setup.stores.jobs.get("j1").state == JobState.ACCEPTED  # type: ignore[union-attr]
    assert setup.queues.schedule.queues["default/Patient/p"] == ["j1", "j2"]
    assert setup.drains.sent == ["default/Patient/p"], "the second job rides on the first one's drain message"
    assert setup.admission.unfinished == {"c": 2}


def test_an_idempotent_repeat_answers_with_the_first_job_and_a_changed_body_is_refused() -> None:
    setup = _Setup()
    first, new = setup.submitter.submit(_submission("j1", key="k"), "j1")
    again, repeated = setup.submitter.submit(_submission("j2", key="k"), "j2")
    assert new and not repeated and again.id == first.id == "j1"
    assert setup.queues.schedule.queues["default/Patient/p"] == ["j1"] and setup.admission.unfinished == {"c": 1}
    with pytest.raises(IdempotencyKeyReused):
        setup.submitter.submit(_submission("j3", family="other", key="k"), "j3")
    assert setup.stores.jobs.get("j3") is None and setup.admission.unfinished == {"c": 1}


def test_over_the_limit_nothing_is_recorded() -> None:
    setup = _Setup(per_client=1)
    setup.submitter.submit(_submission("j1"), "j1")
    with pytest.raises(TooManyUnfinished):
        setup.submitter.submit(_submission("j2"), "j2")
    assert setup.stores.jobs.get("j2") is None and setup.queues.schedule.queues["default/Patient/p"] == ["j1"]


def test_a_job_redis_failed_to_queue_is_withdrawn_and_its_key_freed() -> None:
    setup = _Setup()

    def unavailable(*args: object, **kwargs: object) -> object:
        raise StorageUnavailable("Redis is down", "request")

    setup.queues.schedule.arrive = unavailable  # type: ignore[method-assign, assignment]
    with pytest.raises(ServiceBusy) as busy:
        setup.submitter.submit(_submission("j1", key="k"), "j1")
    assert busy.value.status == 503 and "not accepted" in busy.value.diagnostics
    assert setup.stores.jobs.get("j1") is None, "withdrawn: nothing applies it later"
    assert setup.stores.jobs.start("j1", put("p", "a", "j1").accepted_at) == "cancelled"
    assert setup.admission.unfinished == {"c": 0} and "k" not in setup.stores.jobs.keys


def test_a_block_of_entries_under_backpressure_stops_at_an_entry_and_keeps_the_refusals_before_it() -> None:
    setup = _Setup(per_client=2)
    setup.stores.groups.open("G", "feed", put("p", "a", "x").accepted_at)
    jobs = [(n, put(f"r{n}", "a", f"G-{n:07d}")) for n in (1, 2, 4, 5)]
    refused = [(n, result_event(f"G-{n:07d}", JobResult(400), jobs[0][1].accepted_at)) for n in (3, 6)]
    taken = setup.submitter.submit_entries("G", jobs, refused, "c", partial=True)
    assert taken.queued == ["G-0000001", "G-0000002"] and taken.stopped_at == 4 and taken.refused == 1
    assert isinstance(taken.refusal, TooManyUnfinished)
    assert setup.stores.jobs.get("G-0000004") is None, "entries past the cut are not recorded"
    assert setup.queues.counters.group_counts("G") == {"accepted": 2, "rejected": 1}
    assert sorted(setup.drains.sent) == ["default/Patient/r1", "default/Patient/r2"]


def test_a_transaction_is_queued_on_all_its_keys_at_once() -> None:
    setup = _Setup()
    job = put("p", "a", "T")
    setup.submitter.submit_transaction(job, ["default/Patient/a", "default/Patient/b"])
    assert setup.queues.schedule.queues == {"default/Patient/a": ["T"], "default/Patient/b": ["T"]}
    assert setup.drains.sent == ["default/Patient/a", "default/Patient/b"]
    # one message: one task drains its keys in turn
    assert setup.drains.together == [["default/Patient/a", "default/Patient/b"]]


def test_a_restored_job_is_queued_and_counted_once_as_its_dead_request_never_counted_it() -> None:
    setup = _Setup()
    single, bundle = put("p", "a", "j1"), put("x", "b", "T")
    bundle = replace(bundle, request=replace(bundle.request, action=Action.TRANSACTION))
    setup.submitter.restore(single, [single.queue_key])
    setup.submitter.restore(bundle, ["default/Patient/a", "default/Patient/b"])
    queued = {"default/Patient/p": ["j1"], "default/Patient/a": ["T"], "default/Patient/b": ["T"]}
    assert setup.queues.schedule.queues == queued
    assert setup.drains.sent == ["default/Patient/p", "default/Patient/a", "default/Patient/b"]
    assert setup.queues.schedule.counts.get("accepted", 0) == 2, "each counted once, where it joins its queues"
