"""Commit new versions: the one place that writes versions to MongoDB and their copies to Redis.

A version is one insert, `_id` "Type/id/n", so the insert is a compare-and-set on n
(worker/storage/resource_store.py). Before it, the identifiers the version adds go to the index, so the index
never misses one; after it, the Redis copy of the resource's newest version moves forward (never back:
worker/ordering/copies.py; a direct write's copy moves in the step that gives its key up, by the same rule).
Single jobs, the jobs of one key together, single jobs of many keys, and a transaction's versions all commit
here; a transaction copies its versions only after its commit point.
"""

from __future__ import annotations

from typing import Any

from worker.model.changes import identifiers
from worker.model.stores import Stores
from worker.model.tenants import DEFAULT_TENANT, queue_key
from worker.model.versions import StoredVersion
from worker.ordering.copies import NewestCopies

Change = tuple[StoredVersion | None, StoredVersion]  # (the version it applies to, the new version)


class Commit:
    def __init__(self, database: Stores, copies: NewestCopies, tenant: str = DEFAULT_TENANT) -> None:
        """`database` is `tenant`'s registry; the copies are kept under its queue keys."""
        self._db = database
        self._copies = copies
        self._tenant = tenant

    def in_order(self, changes: list[Change]) -> int:
        """One key's versions, in order: how many were written before the first collision; the last of those is
        copied."""
        written = self._write(changes)
        if written:
            self.copy([changes[written - 1][1]])
        return written

    def transaction(self, changes: list[Change], outcome: dict[str, Any], succeeded: bool) -> None:
        """A transaction's versions (marked with its id, every lease held, so none collides unless the leases
        expired), then its outcome record: that insert is the commit point, readers show marked versions only once
        it exists. The copies move forward only after it."""
        self._write(changes)
        self._db.jobs.finish_many([outcome])
        if succeeded:
            self.copy([new for _, new in changes])

    def each(self, changes: list[Change], copied: bool = True) -> set[int]:
        """Versions of different keys, each on its own: the positions that collided (the others are copied, unless
        not `copied`: a direct write's copy moves in the step that gives its key up, worker/submission/direct.py)."""
        self._index(changes)
        collided = set(self._db.resources.commit_each([new for _, new in changes]))
        if copied:
            self.copy([new for n, (_, new) in enumerate(changes) if n not in collided])
        return collided

    def copy(self, versions: list[StoredVersion]) -> None:
        """Move the Redis copies forward to these versions (written, or read back from MongoDB): one round trip."""
        self._copies.remember_many([(queue_key(self._tenant, v.key), v.version_id, v.to_cache()) for v in versions])

    def _write(self, changes: list[Change]) -> int:
        self._index(changes)
        return self._db.resources.commit_many([new for _, new in changes])

    def _index(self, changes: list[Change]) -> None:
        """Index the identifiers the new versions add, before they are committed."""
        entries = []
        for old, new in changes:
            if new.text is None or '"identifier"' not in new.text:
                continue
            added = identifiers(new.resource()) - identifiers(old.resource() if old is not None and old.text else None)
            entries += [(new.resource_type, system, value, new.resource_id) for system, value in added]
        self._db.identifiers.add(entries)
