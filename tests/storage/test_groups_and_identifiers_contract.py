"""The Groups and Identifiers contracts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def test_a_discarded_group_is_gone(db: Database) -> None:
    db.groups.open("g2", "batch", NOW, {2: "Patient/p"}, "alice")
    assert db.groups.get("g2").reads == {2: "Patient/p"}  # type: ignore[union-attr]
    db.groups.discard("g2")
    assert db.groups.get("g2") is None


def test_identifier_candidates_by_exact_system_or_any(db: Database) -> None:
    db.identifiers.add([("Organization", "urn:a", "1", "o1"), ("Organization", "urn:b", "1", "o2"),
                        ("Organization", "", "1", "o3"), ("Organization", "urn:a", "1", "o1"), ("Patient", "urn:a", "1", "p1")])
    assert db.identifiers.candidates("Organization", "urn:a", "1") == ["o1"]
    assert db.identifiers.candidates("Organization", "", "1") == ["o3"]
    assert db.identifiers.candidates("Organization", None, "1") == ["o1", "o2", "o3"]
    assert db.identifiers.candidates("Organization", "urn:a", "2") == []
