"""Dry-run sessions on the memory doubles: the worker's plans, nothing written, jobs queued ahead counted."""

from __future__ import annotations

from tests.service.conftest import Clock, drainer_of, families, patch, put, queue
from tests.support.memory_queues import MemoryQueues
from tests.support.memory_stores import MemoryStores
from worker.model.transactions import TransactionEntry
from worker.settings import Settings
from worker.submission.dry_run import DryRun


def test_a_session_plans_as_the_worker_applies_and_writes_nothing(
    settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock
) -> None:
    queue(stores, queues, put("p", "a", "j1"))
    drainer_of(settings, stores, queues, clock).drain("default/Patient/p")
    session = DryRun(settings, stores, queues.schedule, clock).session()
    ends = session.jobs([patch("p", "b", "d1"), patch("p", "c", "d2"), patch("q", "x", "d3")])
    assert [end.job.result.status for end in ends if end.job.result] == [200, 200, 404]
    assert [end.job.result.version_id for end in ends if end.job.result] == [2, 3, None], "built on each other"
    assert [end.before.version_id if end.before else None for end in ends] == [1, 2, None]
    assert '"family":"c"' in (ends[1].text or ""), ends[1].text
    assert families(stores) == ["a"], "nothing was written"
    assert stores.jobs.get("d1") is None and queues.schedule.queues.get("default/Patient/p") == []


def test_jobs_queued_ahead_are_counted_not_seen(
    settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock
) -> None:
    queue(stores, queues, put("p", "a", "j1"), patch("p", "b", "j2"))
    session = DryRun(settings, stores, queues.schedule, clock).session()
    (end,) = session.jobs([put("p", "z", "d1")])
    assert end.queued_ahead == 2 and end.before is None, "the two queued jobs are not applied yet"
    assert end.job.result is not None and end.job.result.status == 201


def test_a_dry_transaction_keeps_its_versions_for_the_reads_after_it(
    settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock
) -> None:
    session = DryRun(settings, stores, queues.schedule, clock).session()
    entries = [TransactionEntry(0, put("t1", "a", "x").request), TransactionEntry(1, put("t2", "b", "x").request)]
    planned = session.transaction(put("t1", "a", "txn"), entries)
    assert planned.result.succeeded and [v.key for v in planned.versions] == ["Patient/t1", "Patient/t2"]
    newest = session.newest("Patient", "t2")
    assert newest is not None and newest.version_id == 1 and stores.resources.latest("Patient", "t2") is None
