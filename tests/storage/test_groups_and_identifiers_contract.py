"""The Groups and Identifiers contracts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.model.stores import failed_outcomes, group_outcomes
from worker.storage import Database

NOW = datetime(2026, 11, 30, 10, tzinfo=UTC)


def test_a_group_opens_once_closes_once_and_expires_after_it_ended(db: Database) -> None:
    assert db.groups.open("g1", "feed", NOW, None, "alice")
    assert not db.groups.open("g1", "feed", NOW, None, "mallory"), "a resubmission finds the first"
    assert db.groups.get("g1").total is None  # type: ignore[union-attr]
    db.groups.close("g1", 3, 1, NOW)
    db.groups.close("g1", 9, 9, NOW)
    group = db.groups.get("g1")
    assert group is not None and (group.total, group.rejected, group.owner) == (3, 1, "alice")
    assert group.entry_ids() == ["g1-0000001", "g1-0000002", "g1-0000003"]
    assert list(db.groups.expire(NOW, NOW, lambda g: False)) == [] and db.groups.get("g1") is not None
    assert list(db.groups.expire(NOW, NOW, lambda g: True)) == [], "ended now: kept for the retention"
    expired = list(db.groups.expire(NOW + timedelta(days=2), NOW + timedelta(days=2), lambda g: True))
    assert [g.id for g in expired] == ["g1"] and db.groups.get("g1") is None


def test_refusals_are_kept_per_block_and_read_back_in_entry_order(db: Database) -> None:
    db.groups.open("g3", "feed", NOW, None, "alice")
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": "x"}],
    }
    db.groups.refuse("g3", [(n, 400, outcome) for n in range(1, 501, 2)], NOW)  # the odd lines of the first block
    db.groups.refuse("g3", [(501, 413, None)], NOW)
    db.groups.refuse("g3", [(1, 400, outcome)], NOW)  # a resubmitted feed refuses line 1 again: same answer
    db.groups.close("g3", 502, 251, NOW)
    group = db.groups.get("g3")
    assert group is not None and len(group.refusal_blocks) == 2, "one document per block, not one per line"
    read = list(group_outcomes(db.groups, db.jobs, group))
    assert [n for n, _ in read] == list(range(1, 503))
    assert all(event is not None and event["result"]["status"] == 400 for n, event in read if n % 2 and n < 500)
    assert read[500][1] is not None and read[500][1]["result"]["status"] == 413
    assert all(event is None for n, event in read if n % 2 == 0), "the others are pending (no job outcome yet)"
    expired = list(db.groups.expire(NOW + timedelta(days=2), NOW + timedelta(days=2), lambda g: True))
    expired += list(db.groups.expire(NOW + timedelta(days=4), NOW + timedelta(days=4), lambda g: True))
    assert [g.id for g in expired] == ["g3"] and db.groups.refusals(group) == {}, "the blocks expire with the group"


def test_an_owner_lists_its_newest_groups_newest_first_at_most_twenty(db: Database) -> None:
    for n in range(25):
        db.groups.open(f"gl{n}", "feed", NOW + timedelta(seconds=n), None, "lister")
    db.groups.open("gx", "batch", NOW, None, "someone-else")
    assert db.groups.recent("lister") == [f"gl{n}" for n in range(24, 4, -1)]
    assert db.groups.recent("someone-else") == ["gx"] and db.groups.recent("nobody") == []


def test_failed_lines_are_read_in_entry_order_from_refusals_and_worker_notes(db: Database) -> None:
    db.groups.open("gf", "feed", NOW, None, "alice")
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}
    db.groups.refuse("gf", [(3, 400, outcome), (7, 400, outcome)], NOW)
    db.groups.refuse("gf", [(502, 400, outcome)], NOW)
    db.groups.note_failures({"gf": [9, 2]})
    db.groups.note_failures({"gf": [600, 9]})  # noted again by a redelivered job: once
    group = db.groups.get("gf")
    assert group is not None
    assert db.groups.failures(group) == [2, 9, 600]
    read = list(failed_outcomes(db.groups, db.jobs, group))  # while intake runs: every line so far
    assert [n for n, _ in read] == [2, 3, 7, 9, 502, 600]
    assert [bool(e and e.get("refused")) for _, e in read] == [False, True, True, False, True, False]
    db.groups.close("gf", 550, 3, NOW)
    closed = db.groups.get("gf")
    assert closed is not None and [n for n, _ in failed_outcomes(db.groups, db.jobs, closed)] == [2, 3, 7, 9, 502]


def test_a_discarded_group_is_gone(db: Database) -> None:
    db.groups.open("g2", "batch", NOW, {2: "Patient/p"}, "alice")
    assert db.groups.get("g2").reads == {2: "Patient/p"}  # type: ignore[union-attr]
    db.groups.discard("g2")
    assert db.groups.get("g2") is None


def test_identifier_candidates_by_exact_system_or_any(db: Database) -> None:
    db.identifiers.add(
        [
            ("Organization", "urn:a", "1", "o1"),
            ("Organization", "urn:b", "1", "o2"),
            ("Organization", "", "1", "o3"),
            ("Organization", "urn:a", "1", "o1"),
            ("Patient", "urn:a", "1", "p1"),
        ]
    )
    assert db.identifiers.candidates("Organization", "urn:a", "1") == ["o1"]
    assert db.identifiers.candidates("Organization", "", "1") == ["o3"]
    assert db.identifiers.candidates("Organization", None, "1") == ["o1", "o2", "o3"]
    assert db.identifiers.candidates("Organization", "urn:a", "2") == []
