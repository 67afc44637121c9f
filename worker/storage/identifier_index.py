"""Which resources carry an identifier (system|value), for conditional targets such as `Organization?identifier=s|v`.

Documents addressed by their `_id`, so that a lookup is one key read whatever
the index holds:

- `sys|Type|system|value`: the ids of resources of Type carrying exactly that
  system and value (system '' for an identifier without one);
- `any|Type|value`: the ids carrying that value under any system;
- `bysys|Type|system|b` for b in 0..SYSTEM_BUCKETS-1: the ids carrying any value
  under that system, spread over buckets by a hash of the id, for `system|`
  searches. A system's resources are split over the buckets so that adding one
  rewrites a small document (FerretDB rewrites a document whole), and a search
  pages through the buckets in order.

Ids are added (`$addToSet`, upserted by `_id`) before the version that adds the
identifier is committed, so the index can hold too much (a commit that then
failed, an identifier removed later) but never too little; callers check each
candidate against the resource's newest version.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from worker.edges import translating
from worker.storage import keyed


def exact_key(resource_type: str, system: str, value: str) -> str:
    return f"sys|{resource_type}|{system}|{value}"


def any_system_key(resource_type: str, value: str) -> str:
    return f"any|{resource_type}|{value}"


SYSTEM_BUCKETS = 256


def system_bucket_key(resource_type: str, system: str, bucket: int) -> str:
    return f"bysys|{resource_type}|{system}|{bucket}"


def bucket_of(resource_id: str) -> int:
    return zlib.crc32(resource_id.encode()) % SYSTEM_BUCKETS


@translating(PyMongoError, "MongoDB")
class IdentifierIndex:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._entries: Collection[dict[str, Any]] = db["identifier_index"]

    def add(self, entries: list[tuple[str, str, str, str]]) -> None:
        """(type, system, value, id) entries, one round trip; ids present already are kept once."""
        additions: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"ids": []})
        for resource_type, system, value, resource_id in entries:
            additions[exact_key(resource_type, system, value)]["ids"].append(resource_id)
            additions[any_system_key(resource_type, value)]["ids"].append(resource_id)
            if system:
                additions[system_bucket_key(resource_type, system, bucket_of(resource_id))]["ids"].append(resource_id)
        keyed.add_to_sets(self._entries, additions)

    def candidates(self, resource_type: str, system: str | None, value: str) -> list[str]:
        """Ids that may carry the identifier (system None: any system)."""
        key = any_system_key(resource_type, value) if system is None else exact_key(resource_type, system, value)
        doc = keyed.get(self._entries, key)
        return sorted(str(i) for i in (doc or {}).get("ids", []))

    def with_system(self, resource_type: str, system: str, start_bucket: int = 0) -> Iterator[tuple[int, list[str]]]:
        """(bucket, ids that may carry an identifier of `system`) from `start_bucket` on, a key lookup each."""
        for bucket in range(start_bucket, SYSTEM_BUCKETS):
            doc = keyed.get(self._entries, system_bucket_key(resource_type, system, bucket))
            if doc is not None:
                yield bucket, sorted(str(i) for i in doc.get("ids", []))
