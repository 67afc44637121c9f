"""The storage-rule test's own judge: which filter shapes count as a lookup by key."""

from __future__ import annotations

import pytest

from worker.storage import keyed
from worker.storage.command_log import shape


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"_id": "Patient/p/3"}, "_id="),
        ({"_id": {"$in": ["a", "b"]}}, "_id$in"),
        ({"_id": {"$gte": "a", "$lt": "b"}}, "_id$gte$lt"),
        ({"_id": "a", "txn": "T"}, "_id=,txn="),
        ({"job": "J"}, "job="),
        ({}, "{}"),
    ],
)
def test_only_an_id_equality_is_a_key_lookup(query: dict[str, object], expected: str) -> None:
    assert shape(query) == expected


def test_a_scan_of_an_unbounded_collection_is_refused() -> None:
    class Named:
        name = "history"

        def find(self, *args: object) -> None:
            raise AssertionError("must not be reached")

    with pytest.raises(ValueError, match="not bounded"):
        keyed.scan(Named(), {"job": "J"})  # type: ignore[arg-type]
