"""The transaction commit point against the real MongoDB-protocol server: marked versions are invisible until the
transaction's result exists, then all visible; a crashed attempt's marked versions are removed before a re-run."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.model.jobs import JobResult, result_event
from worker.model.versions import StoredVersion
from worker.settings import Settings
from worker.storage import Database


def _version(pid: str, n: int, transaction: str = "") -> StoredVersion:
    return StoredVersion(
        "Patient",
        pid,
        n,
        datetime.now(UTC),
        f'{{"resourceType":"Patient","id":"{pid}","meta":{{"versionId":"{n}"}}}}',
        job_id=transaction or f"job-{pid}-{n}",
        action="patch",
        transaction=transaction,
    )


def test_marked_versions_appear_together_at_the_commit_point(isolated_settings: Settings) -> None:
    db = Database.open(isolated_settings)
    try:
        for pid in ("a", "b"):
            db.resources.commit(_version(pid, 1))
        db.resources.commit_many(
            [_version("a", 2, "T1"), _version("b", 2, "T1")]
        )  # written, not committed: a crash here
        assert [db.resources.latest("Patient", p).version_id for p in ("a", "b")] == [1, 1]  # type: ignore[union-attr]
        assert db.resources.version("Patient", "a", 2) is None
        assert (
            db.resources.remove_uncommitted("T1", [("Patient", "a", 2), ("Patient", "b", 2)]) == 2
        )  # the re-run cleans up
        db.resources.commit_many([_version("a", 2, "T1"), _version("b", 2, "T1")])
        assert db.resources.latest("Patient", "a").version_id == 1  # type: ignore[union-attr]
        db.jobs.finish_many([result_event("T1", JobResult(200, entries=[]), datetime.now(UTC))])  # the commit point
        assert [db.resources.latest("Patient", p).version_id for p in ("a", "b")] == [2, 2]  # type: ignore[union-attr]
        assert db.resources.remove_uncommitted("T1", [("Patient", "a", 2)]) == 0, "committed versions are never removed"
    finally:
        db.client.drop_database(isolated_settings.database)
        db.close()
