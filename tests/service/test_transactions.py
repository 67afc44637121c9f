"""Transactions on in-memory doubles: holding every key, planning all entries or none, the commit point."""

from __future__ import annotations

import pytest

from tests.service.conftest import START, Clock, patch, put, queue
from tests.support.memory_queues import MemoryQueues
from tests.support.memory_stores import MemoryStores
from worker.model.jobs import Action, Job, JobRequest, JobState
from worker.model.transactions import TransactionEntry, encode_entries, transaction_keys
from worker.service.drain import Drainer
from worker.settings import Settings


def _transaction(job_id: str, *jobs: Job) -> Job:
    entries = [TransactionEntry(index, job.request) for index, job in enumerate(jobs)]
    request = JobRequest(Action.TRANSACTION, "Bundle", job_id, encode_entries(entries))
    return Job(job_id, request, JobState.ACCEPTED, START)


def _queue_transaction(stores: MemoryStores, queues: MemoryQueues, job: Job, *entries: Job) -> None:
    stores.jobs.accept(job)
    keys = transaction_keys([TransactionEntry(i, e.request) for i, e in enumerate(entries)], "default")
    queues.schedule.arrive_transaction(keys, job.id, job.to_payload(), 0.0)


def _drainer(settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock, sent: list[str]) -> Drainer:
    return Drainer(settings, stores, queues, clock=clock, send_drain=sent.append, holder="w1")  # type: ignore[arg-type]


def test_a_transaction_waits_until_it_heads_every_queue_then_applies_all(settings, stores, queues, clock) -> None:
    sent: list[str] = []
    queue(stores, queues, put("b", "before", "j0"))
    entries = (put("a", "x", "e0"), put("b", "y", "e1"))
    _queue_transaction(stores, queues, _transaction("T", *entries), *entries)
    drainer = _drainer(settings, stores, queues, clock, sent)
    parked = drainer.drain("default/Patient/a")
    assert parked.processed == 0 and not parked.more, "it stepped aside"
    assert "default/Patient/a" not in queues.schedule.leases
    assert stores.resources.latest("Patient", "a") is None
    drainer.drain("default/Patient/b")  # j0 first, then the transaction heads both queues: it runs from here
    assert stores.resources.latest("Patient", "a").version_id == 1  # type: ignore[union-attr]
    assert [v.version_id for v in (stores.resources.latest("Patient", "b"),)] == [2]  # type: ignore[union-attr]
    done = stores.jobs.get("T")
    assert done is not None and done.state == JobState.APPLIED
    assert [(e["index"], e["status"]) for e in done.result.entries] == [(0, 201), (1, 200)]  # type: ignore[union-attr]
    assert queues.schedule.queues == {"default/Patient/a": [], "default/Patient/b": []} and queues.schedule.leases == {}
    assert [f.job_id for f in queues.schedule.counted] == ["j0", "T"], "the transaction is counted once"


def test_a_failing_entry_fails_the_whole_transaction_and_writes_nothing(settings, stores, queues, clock) -> None:
    entries = (put("a", "x", "e0"), patch("missing", "y", "e1"))
    _queue_transaction(stores, queues, _transaction("T", *entries), *entries)
    _drainer(settings, stores, queues, clock, []).drain("default/Patient/a")
    failed = stores.jobs.get("T")
    assert failed is not None and failed.state == JobState.FAILED and failed.result.status == 404  # type: ignore[union-attr]
    assert "Bundle.entry[1]" in str(failed.result.outcome)  # type: ignore[union-attr]
    assert stores.resources.stored == {}, "all or nothing"


def test_versions_are_invisible_until_the_commit_point_and_a_rerun_replaces_them(
    settings, stores, queues, clock
) -> None:
    entries = (put("a", "x", "e0"), put("b", "y", "e1"))
    _queue_transaction(stores, queues, _transaction("T", *entries), *entries)
    record = stores.jobs.finish_many

    def crash(events: list[dict[str, object]]) -> set[str]:
        raise RuntimeError("the worker died before the commit point")

    stores.jobs.finish_many = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        _drainer(settings, stores, queues, clock, []).drain("default/Patient/a")
    assert len(stores.resources.stored) == 2, "both versions were written, marked with the transaction"
    assert stores.resources.latest("Patient", "a") is None and stores.resources.latest("Patient", "b") is None
    stores.jobs.finish_many = record  # type: ignore[method-assign]
    queues.schedule.leases.clear()  # the leases it held on the other keys expire
    # redelivered: removes its marks, runs again
    _drainer(settings, stores, queues, clock, []).drain("default/Patient/b")
    assert stores.resources.latest("Patient", "a").version_id == 1  # type: ignore[union-attr]
    assert stores.jobs.get("T").state == JobState.APPLIED and len(stores.resources.stored) == 2  # type: ignore[union-attr]


def test_a_transaction_wakes_the_keys_that_have_more_jobs(settings, stores, queues, clock) -> None:
    sent: list[str] = []
    entries = (put("a", "x", "e0"), put("b", "y", "e1"))
    _queue_transaction(stores, queues, _transaction("T", *entries), *entries)
    queue(stores, queues, patch("b", "z", "j2"))
    _drainer(settings, stores, queues, clock, sent).drain("default/Patient/a")
    assert sent == ["default/Patient/b"] and queues.schedule.queues["default/Patient/b"] == ["j2"]
