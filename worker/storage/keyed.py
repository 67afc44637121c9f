"""Key-only MongoDB access: the one place that talks to collections, so the storage rule holds by construction.

On every path whose cost can grow with the data, a query is an equality lookup
on `_id`, or an insert, update or delete by `_id` (FerretDB's SQLite backend
uses its index for exactly that shape, once scripts/ferretdb-id-index.patch is
applied; real MongoDB uses the `_id` index). The helpers here only build that
shape. A query of any other shape is allowed only on a collection whose size is
bounded by work in flight; those collections are listed in BOUNDED_COLLECTIONS,
and `scan` refuses any other. The query-discipline test holds the service to it
by watching every command it sends.

Every call rides out a MongoDB election (worker/storage/elections.py), but `scan`'s iteration: its collections
are bounded by work in flight, and its callers run again on their next pass.

Duplicate keys are how the stores detect "already there" (the insert is the
compare-and-set), so BulkWriteError code 11000 is translated here, once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pymongo import DeleteOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from worker.storage.elections import through_elections

Document = dict[str, Any]

DUPLICATE_KEY = 11000
UPDATES_PER_COMMAND = 4  # see add_to_sets

# Collections whose size is bounded by work in flight: scans, ranges and sorts are allowed on these alone.
BOUNDED_COLLECTIONS: Mapping[str, str] = {
    "jobs": "jobs accepted and not yet finished (a job's document is deleted when its outcome is recorded)",
    "callbacks": "callbacks owed: finished jobs whose callback was neither delivered nor given up yet",
    "open_groups": "feeds and batches whose entries have not all ended",
}


def storable(value: Any) -> Any:
    """The same document with every string made valid UTF-8 (U+FFFD for lone surrogates)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def insert_new(collection: Collection[Document], documents: list[Document], ordered: bool = False) -> set[int]:
    """Insert; the indexes (into `documents`) of those whose `_id` existed already. With `ordered`, nothing after
    the first duplicate is inserted, and every later index is reported too."""
    if not documents:
        return set()
    try:
        through_elections(lambda: collection.insert_many(documents, ordered=ordered))
        return set()
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        repeated = {int(e["index"]) for e in errors}
        if ordered and repeated:
            repeated |= set(range(min(repeated), len(documents)))
        return repeated


def insert_one_new(collection: Collection[Document], document: Document) -> bool:
    """Insert one document; False when its `_id` existed already."""
    try:
        through_elections(lambda: collection.insert_one(document))
        return True
    except DuplicateKeyError:
        return False


def get(collection: Collection[Document], key: str) -> Document | None:
    return through_elections(lambda: collection.find_one({"_id": key}))


def get_many(collection: Collection[Document], keys: Iterable[str]) -> Iterator[tuple[str, Document | None]]:
    """One `_id` lookup per key (an `$in` would scan on FerretDB)."""
    for key in keys:
        yield key, get(collection, key)


def delete_many(collection: Collection[Document], keys: Iterable[str]) -> int:
    """Delete by `_id`, one round trip; how many existed."""
    operations = [DeleteOne({"_id": key}) for key in keys]
    if not operations:
        return 0
    return through_elections(lambda: collection.bulk_write(operations, ordered=False)).deleted_count


def add_to_sets(collection: Collection[Document], additions: Mapping[str, Mapping[str, list[str]]]) -> None:
    """Add values to set fields of documents by `_id` (created when absent): {key: {field: values}}.

    Insert each document with its values (the insert is the compare-and-set), then `$addToSet` by `_id` into
    those that existed already, at most UPDATES_PER_COMMAND per command: FerretDB 1.24's SQLite backend keeps
    each update's query open until its whole command ends, from a pool of 100 connections per database, so a
    command of many updates (or several at once) exhausted the pool and stalled every client of the database
    (seen under load: a drain of 50 jobs adding identifiers). No upserts either, for the same reason. Both steps
    are idempotent, so a retried call changes nothing."""
    keys = list(additions)
    if not keys:
        return
    fresh = [{"_id": key, **{f: list(dict.fromkeys(v)) for f, v in additions[key].items()}} for key in keys]
    existing = [keys[i] for i in sorted(insert_new(collection, fresh))]
    operations = [
        UpdateOne({"_id": key}, {"$addToSet": {f: {"$each": v} for f, v in additions[key].items()}}) for key in existing
    ]
    for start in range(0, len(operations), UPDATES_PER_COMMAND):
        chunk = operations[start : start + UPDATES_PER_COMMAND]
        through_elections(functools.partial(collection.bulk_write, chunk, ordered=False))


def add_to_set(collection: Collection[Document], key: str, field: str, values: list[str]) -> bool:
    """`$addToSet` into one document expected to exist (one round trip then), created when absent: the update
    first, the insert when it matched nothing, the update again if another writer's insert came first. True when
    this call created the document."""
    update = {"$addToSet": {field: {"$each": values}}}
    if through_elections(lambda: collection.update_one({"_id": key}, update)).matched_count:
        return False
    if insert_one_new(collection, {"_id": key, field: list(dict.fromkeys(values))}):
        return True
    through_elections(lambda: collection.update_one({"_id": key}, update))
    return False


def scan(
    collection: Collection[Document],
    query: Document,
    projection: Document | None = None,
    sort: list[tuple[str, int]] | None = None,
) -> Iterator[Document]:
    """A query of another shape, allowed only on a collection bounded by work in flight (BOUNDED_COLLECTIONS)."""
    if collection.name not in BOUNDED_COLLECTIONS:
        raise ValueError(f"{collection.name} is not bounded by work in flight; only _id lookups are allowed on it")
    cursor = collection.find(query, projection)
    return iter(cursor.sort(sort) if sort else cursor)


__all__ = [
    "BOUNDED_COLLECTIONS",
    "Document",
    "PyMongoError",
    "add_to_set",
    "add_to_sets",
    "delete_many",
    "get",
    "get_many",
    "insert_new",
    "insert_one_new",
    "scan",
    "storable",
]
