"""A synchronous write applied by the API process itself (worker/submission/direct.py), on the in-memory
doubles: only on an idle key; what arrives meanwhile queues behind it and is offered when it settles; a
collision or a busy key sends the job through the queue with nothing of it written; a refused change is
answered and counted, and writes nothing."""

from __future__ import annotations

import json
from dataclasses import replace

from tests.service.conftest import Clock, drainer_of, families, patch, put, queue
from tests.support.memory_queues import MemoryQueues, RecordedDrains
from tests.support.memory_stores import MemoryStores
from worker.model.jobs import JobState
from worker.ordering.commit import Commit
from worker.settings import Settings
from worker.submission.direct import DirectApply

KEY = "default/Patient/p"


def _direct(stores: MemoryStores, queues: MemoryQueues, drains: RecordedDrains) -> DirectApply:
    commit = Commit(stores, queues.copies)  # type: ignore[arg-type]
    return DirectApply(Settings(), stores, queues.schedule, commit, drains, "host:api-1", Clock())  # type: ignore[arg-type]


def test_an_idle_key_is_applied_at_once_with_no_job_record_and_counted() -> None:
    stores, queues, drains = MemoryStores(), MemoryQueues(), RecordedDrains()
    direct = _direct(stores, queues, drains)
    answer = direct.apply(put("p", "a", "j1").request, "j1", "d1")
    assert answer is not None and answer[0].state is JobState.APPLIED and answer[0].result is not None
    assert answer[0].result.status == 201 and json.loads(answer[1] or "")["name"][0]["family"] == "a"
    assert families(stores) == ["a"] and stores.jobs.get("j1") is None, "the version is its only record"
    assert queues.copies.newest_copy(KEY) is not None, "the copy moved forward"
    assert queues.schedule.view(KEY).state().value == "idle" and drains.sent == []
    assert queues.schedule.counts == {"accepted": 1, "applied": 1}
    unknown_path = replace(patch("p", "b", "j2").request, body=b'[{"op": "remove", "path": "/x"}]')
    refused = direct.apply(unknown_path, "j2", "d2")
    assert refused is not None and refused[0].state is JobState.FAILED and families(stores) == ["a"]
    assert queues.schedule.counts == {"accepted": 2, "applied": 1, "failed": 1}


def test_a_busy_key_goes_through_the_queue_and_what_arrives_meanwhile_is_offered_at_the_end() -> None:
    stores, queues, drains = MemoryStores(), MemoryQueues(), RecordedDrains()
    direct = _direct(stores, queues, drains)
    queue(stores, queues, put("p", "a", "j1"))
    assert direct.apply(patch("p", "b", "j2").request, "j2", "d2") is None, "a job is queued: not idle"
    assert families(stores) == [] and stores.jobs.get("j2") is None, "nothing of it written"
    drainer_of(Settings(), stores, queues, Clock()).drain(KEY)
    assert families(stores) == ["a"]

    schedule = queues.schedule
    claim = schedule.claim

    def claim_then_arrive(key: str, token: str, lease: float, now: float):  # type: ignore[no-untyped-def]
        claimed = claim(key, token, lease, now)
        queue(stores, queues, patch("p", "c", "j4"))  # arrives while the request holds the key
        return claimed

    schedule.claim = claim_then_arrive  # type: ignore[method-assign]
    answer = direct.apply(patch("p", "b", "j3").request, "j3", "d3")
    assert answer is not None and families(stores) == ["a", "b"]
    assert drains.sent == [KEY], "the job that queued behind the claim is offered when it settles"
    drainer_of(Settings(), stores, queues, Clock()).drain(KEY)
    assert families(stores) == ["a", "b", "c"], "in arrival order"


def test_a_version_that_collides_writes_nothing_and_sends_the_job_through_the_queue() -> None:
    stores, queues, drains = MemoryStores(), MemoryQueues(), RecordedDrains()
    direct = _direct(stores, queues, drains)
    assert direct.apply(put("p", "a", "j1").request, "j1", "d1") is not None
    stale = queues.copies.kept[KEY]
    queue(stores, queues, put("p", "late", "w9"))
    drainer_of(Settings(), stores, queues, Clock()).drain(KEY)  # version 2, written by a worker
    queues.copies.kept[KEY] = stale  # the copy fell behind (a failover lost its last move)
    assert direct.apply(patch("p", "b", "j2").request, "j2", "d2") is None, "collided: through the queue"
    assert families(stores) == ["a", "late"] and queues.schedule.view(KEY).state().value == "idle"
    assert queues.copies.newest_version(KEY) == 2, "the copy moved forward to what MongoDB holds"
