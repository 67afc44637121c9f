"""Finished jobs retired in batches: recorded and answerable at once, out of flight at the next flush, kept for the
next flush when storage fails, and retired by the reconciler when a crash lost the batch."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.service.conftest import START, Clock, put, queue
from tests.support.memory_queues import MemoryQueues
from tests.support.memory_stores import MemoryStores
from worker.errors import StorageUnavailable
from worker.model.jobs import JobState
from worker.service.drain import Drainer
from worker.service.retirements import Retirements
from worker.settings import Settings


def test_a_finished_job_answers_at_once_and_leaves_flight_at_the_flush(
    settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock
) -> None:
    retirements = Retirements(stores.jobs, clock)  # type: ignore[arg-type]
    queue(stores, queues, put("p", "a", "j1"), put("q", "b", "j2"))
    retire = lambda tenant, ids: retirements.add(ids)  # noqa: E731
    drainer = Drainer(settings, stores, queues, clock=clock, retire=retire)  # type: ignore[arg-type]
    drainer.drain("default/Patient/p")
    drainer.drain("default/Patient/q")
    assert [stores.jobs.get(j).state for j in ("j1", "j2")] == [JobState.APPLIED] * 2  # type: ignore[union-attr]
    assert set(stores.jobs.in_flight) == {"j1", "j2"}, "not retired yet"
    assert retirements.flush() == 2 and stores.jobs.in_flight == {}
    assert set(stores.jobs.finished_at) == {"j1", "j2"}, "each joined an expiry slot"
    assert retirements.flush() == 0


def test_a_failed_flush_keeps_them_for_the_next(stores: MemoryStores, clock: Clock) -> None:
    retirements = Retirements(stores.jobs, clock)  # type: ignore[arg-type]
    retirements.add(["j1"])
    real = stores.jobs.retire

    def outage(job_ids: list[str], now: object) -> None:
        raise StorageUnavailable("MongoDB", "down")

    stores.jobs.retire = outage  # type: ignore[assignment,method-assign]
    with pytest.raises(StorageUnavailable):
        retirements.flush()
    stores.jobs.retire = real  # type: ignore[method-assign]
    retirements.add(["j2"])
    assert retirements.flush() == 2


def test_a_lost_batch_is_retired_by_the_reconciler_scan(
    settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock
) -> None:
    queue(stores, queues, put("p", "a", "j1"))
    Drainer(settings, stores, queues, clock=clock, retire=lambda tenant, ids: None).drain("default/Patient/p")  # type: ignore[arg-type]
    assert "j1" in stores.jobs.in_flight, "its worker died before the flush"
    assert list(stores.jobs.unfinished_before(START + timedelta(hours=1))) == []
    assert stores.jobs.in_flight == {} and "j1" in stores.jobs.finished_at
