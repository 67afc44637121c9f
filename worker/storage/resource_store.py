"""Versioned FHIR resources in MongoDB: an append-only history whose insert is the compare-and-set.

Each version is one document in `history`, `_id` "Type/id/n" (plus a unique
index on (type, id, versionId)). Writing version n+1 is an insert of
"Type/id/n+1": the unique `_id` makes it a compare-and-set on n. A writer that
lost its lease (slow, paused) computed n+1 from an older n, so its insert
collides with the version written meanwhile and fails with VersionConflict:
it can never overwrite a newer version, and no version is written twice.

The insert is the commit: one document, atomic on every MongoDB-protocol
server, so a crash leaves the version either fully there or absent. Nothing
is ever updated in place. That is also what keeps every operation here
O(1) on FerretDB, whose SQLite backend serves inserts and `_id` lookups from
its primary index but scans the collection for updates.

Finding the latest version: the version number of the copy of the newest
version kept in Redis is the starting point; it is only a hint, so the store checks
that version n exists and n+1 does not, galloping forward (or from 1 when
Redis lost the hint) until it does.

Resources are stored as their exact FHIR JSON text, so decimals keep their digits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from worker.edges import translating
from worker.model.versions import StoredVersion
from worker.storage import keyed

# A job delivered again is at the head of its key's queue, so the only versions written after its own are those
# of the jobs committed in the same batch (at most service.BATCH): looking this far back always finds it.
RECENT_VERSIONS = 64

# The copy of each resource's newest version kept in Redis (see KeyQueues), given as
# (its version number, keep a newer copy, read the copy) for a resource key.
# (the newest version number, remember a newest version, the newest copy of a key, the newest copies of keys)
VersionHint = tuple[
    Callable[[str], int],
    Callable[["StoredVersion"], None],
    Callable[[str], "str | None"],
    Callable[[list[str]], "list[str | None]"],
]


class VersionConflict(Exception):
    """Another writer made that version first; `latest` is the newest version now."""

    def __init__(self, message: str, latest: StoredVersion | None) -> None:
        super().__init__(message)
        self.latest = latest


@translating(PyMongoError, "MongoDB")
class ResourceStore:
    """The Resources interface on MongoDB (collection `history`). `committed` says whether a transaction reached its
    commit point (the job store knows; this store never reads its collections)."""

    def __init__(
        self,
        db: Database[dict[str, Any]],
        hint: VersionHint | None = None,
        committed: Callable[[str], bool] = lambda transaction: False,
    ) -> None:
        self._history: Collection[dict[str, Any]] = db["history"]
        self._committed = committed
        self._read_hint, self._remember, self._read_copy, self._read_copies = hint or (
            lambda key: 0,
            lambda version: None,
            lambda key: None,
            lambda keys: [None] * len(keys),
        )

    def ensure_indexes(self) -> None:
        """Nothing beyond `_id`: every lookup is by `_id` (an extra index would only slow each insert)."""

    def written_by(self, job_id: str, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The version a job wrote, if it did: asked only when a job is delivered again, by `_id` lookups of
        the resource's most recent versions (RECENT_VERSIONS)."""
        newest = self.latest(resource_type, resource_id)
        if newest is None:
            return None
        for version_id in range(newest.version_id, max(0, newest.version_id - RECENT_VERSIONS), -1):
            version = (
                newest if version_id == newest.version_id else self.version(resource_type, resource_id, version_id)
            )
            if version is not None and version.job_id == job_id:
                return version
        return None

    def version(self, resource_type: str, resource_id: str, version_id: int) -> StoredVersion | None:
        if version_id < 1:
            return None
        doc = keyed.get(self._history, f"{resource_type}/{resource_id}/{version_id}")
        if doc is None or (doc.get("txn") and not self._committed(str(doc["txn"]))):
            return None  # absent, or written by a transaction that has not committed (and never will: see uncommitted)
        return StoredVersion.from_document(doc)

    def remove_uncommitted(self, transaction: str, candidates: list[tuple[str, str, int]]) -> int:
        """Delete versions a transaction wrote before it crashed without committing (type, id, version to check)."""
        if self._committed(transaction):
            return 0  # committed versions are the truth: never removed
        ids = [f"{t}/{i}/{v}" for t, i, v in candidates]
        marked = [
            key for key, doc in keyed.get_many(self._history, ids) if doc is not None and doc.get("txn") == transaction
        ]
        return keyed.delete_many(self._history, marked)

    def newest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The newest version, from the Redis copy when there is one, else from MongoDB (and then copied).

        A copy can only be behind for the moment between a commit and its copy; a writer that
        used it collides with the newer version on commit and learns it, so no update is lost."""
        copy = self._read_copy(f"{resource_type}/{resource_id}")
        return StoredVersion.from_cache(copy) if copy else self.latest(resource_type, resource_id)

    def versions(self, wanted: list[tuple[str, str, int]]) -> list[StoredVersion | None]:
        """Several versions (type, id, number), for a Bundle's answer: from the Redis copies, in one round trip,
        when they are those versions (they are, right after a transaction or batch), else by `_id` each."""
        copies = self._read_copies([f"{t}/{i}" for t, i, _ in wanted])
        found: list[StoredVersion | None] = []
        for (resource_type, resource_id, version_id), copy in zip(wanted, copies):
            version = StoredVersion.from_cache(copy) if copy else None
            if version is None or version.version_id != version_id:
                version = self.version(resource_type, resource_id, version_id)
            found.append(version)
        return found

    def peek_newest(self, keys: list[str]) -> list[StoredVersion | None]:
        """The newest version of each `Type/id`, as `newest` reads it (the Redis copies in one round trip, MongoDB
        for the others) but writing nothing, not even a copy: what a dry run reads."""
        found: list[StoredVersion | None] = []
        for key, copy in zip(keys, self._read_copies(keys)):
            resource_type, _, resource_id = key.partition("/")
            found.append(StoredVersion.from_cache(copy) if copy else self._latest(resource_type, resource_id, False))
        return found

    def latest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The newest version according to MongoDB alone (None if the resource never existed)."""
        return self._latest(resource_type, resource_id, True)

    def uncopied(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """`latest`, for a caller that knows Redis holds no copy (a drain step read none in the same Lua step that
        leased the key): no Redis read for the hint, so a create costs its one MongoDB lookup and nothing more."""
        return self._latest(resource_type, resource_id, True, hint=0)

    def _latest(
        self, resource_type: str, resource_id: str, remember: bool, hint: int | None = None
    ) -> StoredVersion | None:
        key = f"{resource_type}/{resource_id}"
        hinted = self._read_hint(key) if hint is None else hint
        hint = hinted
        newest = self.version(resource_type, resource_id, hint) if hint else None
        if hint and newest is None:
            hint = 0  # a hint from elsewhere (or wrong): start again from the beginning
        step = 1
        while True:  # gallop forward while later versions exist
            ahead = self.version(resource_type, resource_id, hint + step)
            if ahead is None:
                if step == 1:
                    break
                step = 1
                continue
            newest, hint, step = ahead, hint + step, step * 2
        if remember and newest is not None and newest.version_id != hinted:
            self._remember(newest)
        return newest

    def history(
        self, resource_type: str, resource_id: str, count: int, offset: int = 0
    ) -> tuple[int, list[StoredVersion]]:
        """(the newest version number, or 0 when the resource never existed; a page of versions newest first,
        skipping the `offset` newest): a page is a known list of `_id`s."""
        newest = self.latest(resource_type, resource_id)
        if newest is None:
            return 0, []
        top = newest.version_id - offset
        page = [self.version(resource_type, resource_id, n) for n in range(top, max(0, top - count), -1)]
        return newest.version_id, [v for v in page if v is not None]

    def commit_many(self, versions: list[StoredVersion]) -> int:
        """Write consecutive versions in order, one round trip; how many were written before a collision (if any)."""
        repeated = keyed.insert_new(self._history, [v.to_document() for v in versions], ordered=True)
        return min(repeated, default=len(versions))

    def commit_each(self, versions: list[StoredVersion]) -> set[int]:
        """Write versions of different resources, one round trip, each a compare-and-set of its own; the indexes
        of those whose version number was taken (the others are written)."""
        return keyed.insert_new(self._history, [v.to_document() for v in versions])

    def commit(self, new: StoredVersion) -> None:
        """Write `new`; VersionConflict (carrying the newest version) if that version number is taken."""
        if not keyed.insert_one_new(self._history, new.to_document()):
            raise VersionConflict(
                f"{new.key} version {new.version_id} already exists", self.latest(new.resource_type, new.resource_id)
            )
