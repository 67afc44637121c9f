"""Each store's contract, run against the real MongoDB-protocol server started by the test command."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.settings import Settings
from worker.storage import Database


@pytest.fixture()
def db(isolated_settings: Settings) -> Iterator[Database]:
    database = Database.open(isolated_settings)
    database.ensure_indexes()
    try:
        yield database
    finally:
        database.client.drop_database(isolated_settings.database)
        database.close()
