"""Each store's contract, run against the real MongoDB-protocol server started by the test command, and against
the in-memory doubles the service's unit tests use (so a double cannot drift from the real store)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.memory_stores import MemoryStores
from worker.settings import Settings
from worker.storage import Database


@pytest.fixture(params=["mongodb", "memory"])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    if request.param == "memory":
        yield MemoryStores()  # type: ignore[misc]
        return
    isolated_settings: Settings = request.getfixturevalue("isolated_settings")
    database = Database.open(isolated_settings)
    database.ensure_indexes()
    try:
        yield database
    finally:
        database.client.drop_database(isolated_settings.database)
        database.close()
