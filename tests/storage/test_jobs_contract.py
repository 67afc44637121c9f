"""The Jobs contract: the durable accept, one winner between start and cancel, one outcome, jobs in flight only
until their outcome, idempotency keys, callbacks owed, expiry by slot, withdrawal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.model.access import Actor
from worker.model.jobs import Action, Job, JobRequest, JobResult, JobState, result_event
from worker.storage import Database, IdempotencyConflict

NOW = datetime(2026, 11, 30, 10, tzinfo=UTC)


def _job(job_id: str, callback: str | None = None, at: datetime = NOW) -> Job:
    request = JobRequest(Action.PATCH, "Patient", "p", b"[]", "application/json-patch+json", actor=Actor("alice", "c"))
    return Job(job_id, request, JobState.ACCEPTED, at, callback_url=callback, extra={"idempotencyKey": f"key-{job_id}"})


def test_a_job_lives_in_flight_until_its_outcome_and_stays_pollable_after(db: Database) -> None:
    db.jobs.accept(_job("a"))
    assert db.jobs.get("a").state == JobState.ACCEPTED  # type: ignore[union-attr]
    assert [j.id for j in db.jobs.unfinished_before(NOW + timedelta(seconds=1))] == ["a"]
    assert db.jobs.start("a", NOW) == "first" and db.jobs.start("a", NOW) == "again"
    assert db.jobs.get("a").state == JobState.RUNNING  # type: ignore[union-attr]
    assert [j.id for j in db.jobs.unfinished_before(NOW + timedelta(seconds=1))] == ["a"], (
        "a started job is still in flight"
    )
    assert db.jobs.finish_many([result_event(_job("a"), JobResult(200, 3, NOW), NOW)]) == {"a"}
    assert db.jobs.finish_many([result_event(_job("a"), JobResult(500), NOW)]) == set(), "one outcome"
    done = db.jobs.get("a")
    assert done is not None and done.state == JobState.APPLIED and done.result.version_id == 3  # type: ignore[union-attr]
    assert done.owner == "alice" and done.request.body == b""
    assert list(db.jobs.unfinished_before(NOW + timedelta(days=1))) == []
    assert db.jobs.accepted("a") is None


def test_start_and_cancel_have_one_winner(db: Database) -> None:
    db.jobs.accept_many([_job("b"), _job("c")])
    assert db.jobs.cancel("b", NOW) and db.jobs.cancel("b", NOW)
    assert db.jobs.start_many(["b", "c"], NOW) == ["cancelled", "first"]
    assert not db.jobs.cancel("c", NOW)
    assert db.jobs.cancel_many(["c", "d"], NOW) == 1
    db.jobs.cancelled_left(["b"], NOW)
    assert db.jobs.get("b") is None, "a cancelled job that left its queue is gone"


def test_repeated_accepts_and_withdrawals(db: Database) -> None:
    assert [j.id for j in db.jobs.accept_many([_job("e"), _job("f")])] == ["e", "f"]
    assert [j.id for j in db.jobs.accept_many([_job("e"), _job("g")])] == ["g"]
    db.jobs.withdraw_many(["g"], NOW)
    assert db.jobs.get("g") is None and db.jobs.start("g", NOW) == "cancelled"
    db.jobs.forget_many(["f"])
    assert db.jobs.get("f") is None


def test_idempotency_keys(db: Database) -> None:
    assert db.jobs.remember_key("k", "d1", "h", NOW) == "h"
    assert db.jobs.remember_key("k", "d1", "i", NOW) == "h"
    with pytest.raises(IdempotencyConflict):
        db.jobs.remember_key("k", "d2", "i", NOW)
    db.jobs.forget_key("k", "other")
    assert db.jobs.remember_key("k", "d1", "j", NOW) == "h", "only its own job forgets a key"
    db.jobs.forget_key("k", "h")
    assert db.jobs.remember_key("k", "d3", "j", NOW) == "j"


def test_callbacks_owed_until_they_end(db: Database) -> None:
    db.jobs.accept(_job("cb", callback="http://127.0.0.1:1/x"))
    db.jobs.finish_many([result_event(_job("cb", callback="http://127.0.0.1:1/x"), JobResult(200), NOW)])
    assert list(db.jobs.callbacks_owed(NOW + timedelta(seconds=1))) == ["cb"]
    assert db.jobs.callback_state("cb") == "pending"
    db.jobs.callback_ended("cb", "delivered", 1, 204, NOW)
    assert db.jobs.callback_state("cb") == "delivered" and list(db.jobs.callbacks_owed(NOW + timedelta(days=1))) == []


def test_outcomes_and_expiry(db: Database) -> None:
    finished = NOW - timedelta(days=2)
    db.jobs.accept_many([_job("x"), _job("y")])
    db.jobs.finish_many([result_event(_job("x"), JobResult(200), finished)])
    db.jobs.cancel("y", NOW)
    states = [o["state"] if o else None for _, o in db.jobs.outcomes(["x", "y", "z"])]
    assert states == ["applied", "cancelled", None]
    assert db.jobs.expire(finished + timedelta(hours=1)) == 1
    assert db.jobs.get("x") is None
    assert db.jobs.expire(finished + timedelta(hours=1)) == 0, "a slot is removed once"


def test_a_recorded_outcome_stays_in_flight_until_retired_and_a_lost_retirement_is_made_good(db: Database) -> None:
    for job_id in ("r1", "r2"):
        db.jobs.accept(_job(job_id))
    events = [result_event(_job(j), JobResult(200, 1, NOW), NOW) for j in ("r1", "r2")]
    assert db.jobs.record_outcomes(events) == {"r1", "r2"}
    assert db.jobs.get("r1").state == JobState.APPLIED  # type: ignore[union-attr]
    assert list(db.jobs.in_flight_before(NOW + timedelta(seconds=1))) == ["r1", "r2"], "not retired yet"
    db.jobs.retire(["r1"], NOW)
    assert list(db.jobs.in_flight_before(NOW + timedelta(seconds=1))) == ["r2"]
    assert list(db.jobs.unfinished_before(NOW + timedelta(seconds=1))) == [], "r2's retirement was lost: made good"
    assert list(db.jobs.in_flight_before(NOW + timedelta(seconds=1))) == []
    assert db.jobs.expire(NOW + timedelta(seconds=5)) == 2, "both joined an expiry slot"
    assert db.jobs.get("r2") is None
