"""The Resources contract: versions by number, the insert of n+1 as compare-and-set, history pages, the version a
job wrote, transactions' marked versions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.model.jobs import JobResult, result_event
from worker.model.versions import StoredVersion
from worker.settings import Settings
from worker.storage import Database, VersionConflict

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _v(n: int, job: str = "", txn: str = "", rid: str = "p") -> StoredVersion:
    return StoredVersion(
        "Patient",
        rid,
        n,
        NOW,
        f'{{"resourceType":"Patient","id":"{rid}","meta":{{"versionId":"{n}"}}}}',
        job or f"j{n}",
        "update",
        txn,
        provenance='{"resourceType":"Provenance"}',
    )


def test_commit_is_a_compare_and_set(db: Database) -> None:
    db.resources.commit(_v(1))
    db.resources.commit(_v(2))
    with pytest.raises(VersionConflict) as conflict:
        db.resources.commit(_v(2, job="late"))
    assert conflict.value.latest is not None and conflict.value.latest.job_id == "j2"
    assert db.resources.version("Patient", "p", 2).job_id == "j2"  # type: ignore[union-attr]
    assert db.resources.version("Patient", "p", 3) is None and db.resources.version("Patient", "p", 0) is None
    assert db.resources.latest("Patient", "p").version_id == 2  # type: ignore[union-attr]
    assert db.resources.latest("Patient", "nobody") is None


def test_versions_reads_several_from_copies_when_they_match_else_by_key(isolated_settings: Settings) -> None:
    copies = {"Patient/a": _v(2, rid="a").to_cache(), "Patient/b": _v(5, rid="b").to_cache()}  # b's copy is newer
    hint = (lambda key: 0, lambda version: None, copies.get, lambda keys: [copies.get(k) for k in keys])
    db = Database.open(isolated_settings, hint)
    try:
        db.resources.commit_many([_v(1, rid="a"), _v(2, rid="a")])
        db.resources.commit_many([_v(1, rid="b"), _v(2, rid="b")])
        found = db.resources.versions([("Patient", "a", 2), ("Patient", "b", 2), ("Patient", "c", 1)])
        assert [(v.resource_id, v.version_id) if v else None for v in found] == [("a", 2), ("b", 2), None]
    finally:
        db.client.drop_database(isolated_settings.database)
        db.close()


def test_peek_newest_reads_copies_then_mongodb_and_copies_nothing(isolated_settings: Settings) -> None:
    copies = {"Patient/a": _v(3, rid="a").to_cache()}
    remembered: list[StoredVersion] = []
    hint = (lambda key: 0, remembered.append, copies.get, lambda keys: [copies.get(k) for k in keys])
    db = Database.open(isolated_settings, hint)
    try:
        db.resources.commit_many([_v(1, rid="b"), _v(2, rid="b")])
        found = db.resources.peek_newest(["Patient/a", "Patient/b", "Patient/c"])
        assert [(v.resource_id, v.version_id) if v else None for v in found] == [("a", 3), ("b", 2), None]
        assert remembered == [], "a peek writes no copy"
        assert db.resources.newest("Patient", "b") is not None and len(remembered) == 1, "newest does"
    finally:
        db.client.drop_database(isolated_settings.database)
        db.close()


def test_uncopied_reads_mongodb_alone_and_copies_what_it_found(isolated_settings: Settings) -> None:
    reads: list[str] = []
    remembered: list[StoredVersion] = []

    def read(key: str) -> None:
        reads.append(key)

    hint = (lambda key: read(key) or 0, remembered.append, read, lambda keys: [read(k) for k in keys])
    db = Database.open(isolated_settings, hint)
    try:
        db.resources.commit_many([_v(n, rid="b") for n in range(1, 6)])
        found = db.resources.uncopied("Patient", "b")
        assert found is not None and found.version_id == 5 and [v.version_id for v in remembered] == [5]
        assert db.resources.uncopied("Patient", "new") is None and len(remembered) == 1
        assert reads == [], "no Redis read: the caller knows there is no copy"
    finally:
        db.client.drop_database(isolated_settings.database)
        db.close()


def test_commit_many_stops_at_the_first_taken_number(db: Database) -> None:
    db.resources.commit(_v(1))
    db.resources.commit(_v(3, job="other"))
    assert db.resources.commit_many([_v(2), _v(3), _v(4)]) == 1
    assert db.resources.version("Patient", "p", 4) is None


def test_history_pages_are_known_keys(db: Database) -> None:
    db.resources.commit_many([_v(n) for n in range(1, 8)])
    total, page = db.resources.history("Patient", "p", 3, 2)
    assert total == 7 and [v.version_id for v in page] == [5, 4, 3]
    assert db.resources.history("Patient", "nobody", 3) == (0, [])


def test_the_version_a_job_wrote_is_found_among_recent_ones(db: Database) -> None:
    db.resources.commit_many([_v(n) for n in range(1, 30)])
    assert db.resources.written_by("j25", "Patient", "p").version_id == 25  # type: ignore[union-attr]
    assert db.resources.written_by("nobody", "Patient", "p") is None
    assert db.resources.version("Patient", "p", 25).provenance == '{"resourceType":"Provenance"}'  # type: ignore[union-attr]


def test_marked_versions_are_invisible_until_the_commit_point_and_removable_before(db: Database) -> None:
    db.resources.commit(_v(1))
    db.resources.commit_many([_v(2, txn="T"), _v(1, txn="T", rid="q")])
    assert db.resources.latest("Patient", "p").version_id == 1  # type: ignore[union-attr]
    assert db.resources.remove_uncommitted("T", [("Patient", "p", 2), ("Patient", "q", 1), ("Patient", "p", 9)]) == 2
    db.resources.commit_many([_v(2, txn="T")])
    db.jobs.finish_many([result_event("T", JobResult(200, entries=[]), NOW)])
    assert db.jobs.committed("T")
    assert db.resources.latest("Patient", "p").version_id == 2  # type: ignore[union-attr]
    assert db.resources.remove_uncommitted("T", [("Patient", "p", 2)]) == 0, "committed versions are never removed"
