"""Durability and elections on the real MongoDB-protocol server, with failures injected at the pymongo boundary.

FerretDB runs no replica set here, so an election is played by pymongo's own exceptions: raised by
`Collection.insert_many` after the real insert (the write succeeded but its answer was lost), or on every call
(no primary for longer than the budget).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError, NotPrimaryError, WTimeoutError
from pymongo.read_preferences import ReadPreference

from tests.service.conftest import Clock, put, queue
from tests.support.memory_queues import MemoryQueues
from worker.errors import StorageUnavailable
from worker.model.jobs import JobState
from worker.service.drain import Drainer
from worker.settings import Settings
from worker.storage import Database
from worker.storage.elections import is_election, retry_for


@pytest.fixture()
def database(isolated_settings: Settings) -> Iterator[Database]:
    opened = Database.open(isolated_settings)
    try:
        yield opened
    finally:
        retry_for(isolated_settings.mongodb_retry_seconds)
        opened.client.drop_database(isolated_settings.database)
        opened.close()


def _after_insert(monkeypatch: pytest.MonkeyPatch, error: Exception, times: int = 1) -> list[str]:
    """`insert_many` into `history` does the insert, then raises `error` (`times` times): its answer is lost."""
    real: Callable[..., Any] = Collection.insert_many
    raised: list[str] = []

    def insert_then_fail(self: Collection[Any], documents: Any, *args: Any, **kwargs: Any) -> Any:
        result = real(self, documents, *args, **kwargs)
        if self.name == "history" and len(raised) < times:
            raised.append(self.name)
            raise error
        return result

    monkeypatch.setattr(Collection, "insert_many", insert_then_fail)
    return raised


def test_the_client_asks_for_the_configured_write_concern_and_the_primary(isolated_settings: Settings) -> None:
    for raw, expected in (
        ("", {"w": "majority", "j": True, "wtimeout": 10000}),
        ("w=1,j=false,wtimeout=500", {"w": 1, "j": False, "wtimeout": 500}),
        ("2", {"w": 2, "j": True, "wtimeout": 10000}),
    ):
        settings = Settings.from_env({"FHIR_PATCH_MONGODB_WRITE_CONCERN": raw})
        opened = Database.open(settings)
        try:
            assert opened.client.write_concern.document == expected, raw
            assert opened.client.read_preference == ReadPreference.PRIMARY
            assert opened.client.options.retry_writes and opened.client.options.retry_reads
        finally:
            opened.close()


@pytest.mark.parametrize(
    ("error", "election"),
    [
        (AutoReconnect("connection reset"), True),
        (NotPrimaryError("not primary"), True),
        (WTimeoutError("waiting for replication timed out", 64), True),
        (BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "wtimeout"}]}), True),
        (BulkWriteError({"writeErrors": [{"code": 11000, "index": 0}], "writeConcernErrors": []}), False),
        (DuplicateKeyError("E11000"), False),
    ],
    ids=["AutoReconnect", "NotPrimaryError", "wtimeout", "bulk write concern", "bulk duplicate", "duplicate key"],
)
def test_which_failures_are_an_election(error: Exception, election: bool) -> None:
    assert is_election(error) is election


def test_a_commit_whose_answer_was_lost_is_recognised_as_its_own_version(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version insert succeeds, its answer is lost (AutoReconnect), the retry meets the version: the job's own,
    not another writer's. The job ends applied with version 1, written once; no lease is given up as lost."""
    raised = _after_insert(monkeypatch, AutoReconnect("the primary stepped down"))
    queues = MemoryQueues()
    queue(database, queues, put("p", "a", "j1"))  # type: ignore[arg-type]
    drained = Drainer(Settings(), database, queues, clock=Clock(), holder="w1").drain("default/Patient/p")  # type: ignore[arg-type]
    assert raised == ["history"], "the failure was injected after the insert"
    assert drained.processed == 1 and not drained.held_elsewhere
    job = database.jobs.get("j1")
    assert job is not None and job.state is JobState.APPLIED and job.result is not None
    assert (job.result.status, job.result.version_id) == (201, 1)
    assert database.resources.latest("Patient", "p").job_id == "j1"  # type: ignore[union-attr]
    assert database.resources.version("Patient", "p", 2) is None, "written once"


def test_no_primary_for_longer_than_the_budget_is_a_503_with_retry_after(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def no_primary(self: Collection[Any], *args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        raise NotPrimaryError("not primary")

    monkeypatch.setattr(Collection, "find_one", no_primary)
    retry_for(0.5)
    with pytest.raises(StorageUnavailable) as refused:
        database.resources.version("Patient", "p", 1)
    assert refused.value.status == 503 and refused.value.headers["Retry-After"]
    assert len(attempts) > 1, "retried before giving up"
    assert isinstance(refused.value.__cause__, NotPrimaryError)
