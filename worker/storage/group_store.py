"""Groups of jobs (a bulk feed, a batch Bundle): one record, and the results of its entries in entry order.

Entry n of group G is job `G-nnnnnnn` (zero-padded), so the group needs no
list of its jobs, a resubmitted feed (same Idempotency-Key, same G) collides
line by line with what was already accepted, and the results of a block of
entries are one range read of `_id`s, in entry order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

BLOCK = 2000  # entries per results read: bounded memory whatever the group's size


def entry_job_id(group_id: str, number: int) -> str:
    return f"{group_id}-{number:07d}"


def group_of(job_id: str) -> str:
    """The group a job belongs to ('' for a job on its own)."""
    return job_id.rsplit("-", 1)[0] if "-" in job_id else ""


@dataclass(frozen=True)
class Group:
    id: str
    kind: str
    created_at: datetime
    total: int | None  # entries in the group, once its intake ended
    rejected: int = 0  # entries refused at intake (they have results already)
    reads: dict[int, str] | None = None  # GET entries of a batch Bundle (no job: answered at the end)
    owner: str | None = None  # the subject that submitted it; only it (or a jobs admin) sees it


class GroupStore:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._groups: Collection[dict[str, Any]] = db["groups"]
        self._events: Collection[dict[str, Any]] = db["job_events"]

    def open(self, group_id: str, kind: str, now: datetime, reads: dict[int, str] | None = None, owner: str | None = None) -> bool:
        """Record the group; False when it exists already (a resubmission with the same Idempotency-Key).

        `reads`: entry number -> the URL of a GET entry, answered when the Bundle's answer is built."""
        try:
            self._groups.insert_one({"_id": group_id, "kind": kind, "createdAt": now, "owner": owner,
                                     "reads": {str(k): v for k, v in (reads or {}).items()}})
            return True
        except DuplicateKeyError:
            return False

    def discard(self, group_id: str) -> None:
        """Forget a group whose intake accepted nothing (refused whole by backpressure)."""
        self._groups.delete_one({"_id": group_id})

    def close(self, group_id: str, total: int, rejected: int, now: datetime) -> None:
        """The intake ended with `total` entries. A resubmission's close collides with the first; the first stands."""
        try:
            self._groups.insert_one({"_id": f"{group_id}/closed", "total": total, "rejected": rejected, "at": now})
        except DuplicateKeyError:
            pass

    def get(self, group_id: str) -> Group | None:
        doc = self._groups.find_one({"_id": group_id})
        if doc is None:
            return None
        closed = self._groups.find_one({"_id": f"{group_id}/closed"})
        reads = {int(k): str(v) for k, v in (doc.get("reads") or {}).items()}
        return Group(group_id, doc["kind"], doc["createdAt"], closed["total"] if closed else None, closed["rejected"] if closed else 0, reads,
                     doc.get("owner"))

    def results(self, group_id: str, total: int) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """(entry number, its result event or None while pending) for entries 1..total, in order, a block at a time."""
        for start in range(1, total + 1, BLOCK):
            stop = min(total, start + BLOCK - 1)
            low, high = f"{entry_job_id(group_id, start)}/", f"{entry_job_id(group_id, stop)}/~"
            found: dict[str, dict[str, Any]] = {}
            for doc in self._events.find({"_id": {"$gte": low, "$lte": high}}):
                job_id, kind = str(doc["_id"]).split("/")
                if kind == "result" or (kind == "gate" and doc.get("by") == "cancel"):
                    found.setdefault(job_id, doc if kind == "result" else {"state": "cancelled"})
            for number in range(start, stop + 1):
                yield number, found.get(entry_job_id(group_id, number))

    def expire(self, before: datetime, now: datetime, has_ended: Callable[[Group], bool]) -> int:
        """Groups are kept for the retention counted from when their last entry ended: a group seen ended gets an
        `G/ended` record; one ended before `before` goes, with all its entries' jobs and events. Returns groups removed."""
        removed = 0
        for doc in self._groups.find({"total": {"$exists": True}}):
            group_id = str(doc["_id"]).split("/")[0]
            ended = self._groups.find_one({"_id": f"{group_id}/ended"})
            if ended is None:
                group = self.get(group_id)
                if group is not None and has_ended(group):
                    self._groups.insert_one({"_id": f"{group_id}/ended", "at": now})
            elif ended["at"] < before:
                entries = {"_id": {"$gte": f"{group_id}-", "$lt": f"{group_id}-~"}}
                self._events.delete_many(entries)
                self._groups.database["jobs"].delete_many(entries)
                self._groups.delete_many({"_id": {"$in": [group_id, f"{group_id}/closed", f"{group_id}/ended"]}})
                removed += 1
        return removed

    def count_results(self, group_id: str, total: int) -> dict[str, int]:
        """applied / failed / pending counted from MongoDB (when Redis lost the counters)."""
        counts = {"applied": 0, "failed": 0, "cancelled": 0, "pending": 0}
        for _, result in self.results(group_id, total):
            counts[result["state"] if result else "pending"] += 1
        return counts
