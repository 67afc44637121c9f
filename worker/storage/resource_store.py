"""Versioned FHIR resources in MongoDB, written only by compare-and-set.

Two collections:

- `resources`: one document per resource (`_id` "Type/id") holding its latest
  version. Replacing it is the one commit point of every write: an
  `update_one` filtered on the version the new one was computed from. A
  writer that lost its lease (slow, paused) matches nothing and fails with
  VersionConflict, so it can never overwrite a newer version.
- `history`: every superseded version (`_id` "Type/id/n", and a unique index
  on (type, id, versionId)). Before a commit replaces version n, the writer
  copies n into history (an insert that a duplicate makes a no-op), so a crash
  at any point loses nothing: either the commit happened and n is already in
  history, or it did not and n is still current.

Each resource document also keeps the ids of the last jobs that wrote it: a
redelivered job finds itself there and is never applied twice.

Resources are stored as their exact FHIR JSON text (decimals keep their
digits) next to the few fields queries need. Lookups are by `_id` only,
which every MongoDB-protocol server serves from its primary index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from worker.patch.fhir_json import loads

RECENT_JOBS_KEPT = 200


class VersionConflict(Exception):
    """The resource moved on since it was read: the write was refused, nothing changed."""


@dataclass(frozen=True)
class StoredVersion:
    """One version of one resource; `text` is its FHIR JSON (None for a deletion)."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    text: str | None
    job_id: str = ""
    action: str = ""  # the job action that wrote it (history Bundles show it as request.method)

    @property
    def deleted(self) -> bool:
        return self.text is None

    @property
    def key(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"

    def resource(self) -> dict[str, Any]:
        """A fresh dict of the stored resource (callers may change it freely)."""
        if self.text is None:
            raise ValueError(f"{self.key} version {self.version_id} is a deletion")
        parsed = loads(self.text.encode(), what="stored resource")
        assert isinstance(parsed, dict)
        return parsed

    def to_document(self) -> dict[str, Any]:
        return {"type": self.resource_type, "id": self.resource_id, "versionId": self.version_id,
                "lastUpdated": self.last_updated, "deleted": self.deleted, "json": self.text, "job": self.job_id,
                "action": self.action}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> StoredVersion:
        return cls(doc["type"], doc["id"], doc["versionId"], doc["lastUpdated"], doc.get("json"), doc.get("job", ""), doc.get("action", ""))


@dataclass(frozen=True)
class Current:
    """The latest version plus the jobs that recently wrote the resource (job id -> version)."""

    version: StoredVersion
    recent_jobs: dict[str, int]


class ResourceStore:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._current: Collection[dict[str, Any]] = db["resources"]
        self._history: Collection[dict[str, Any]] = db["history"]

    def ensure_indexes(self) -> None:
        self._history.create_index([("type", 1), ("id", 1), ("versionId", 1)], unique=True, name="type_id_version")

    def current(self, resource_type: str, resource_id: str) -> Current | None:
        doc = self._current.find_one({"_id": f"{resource_type}/{resource_id}"})
        if doc is None:
            return None
        return Current(StoredVersion.from_document(doc), dict(doc.get("recentJobs") or {}))

    def version(self, resource_type: str, resource_id: str, version_id: int) -> StoredVersion | None:
        current = self.current(resource_type, resource_id)
        if current is None or version_id > current.version.version_id or version_id < 1:
            return None
        if version_id == current.version.version_id:
            return current.version
        doc = self._history.find_one({"_id": f"{resource_type}/{resource_id}/{version_id}"})
        return StoredVersion.from_document(doc) if doc else None

    def history(self, resource_type: str, resource_id: str, count: int) -> Iterator[StoredVersion]:
        """Newest first, at most `count` versions."""
        current = self.current(resource_type, resource_id)
        if current is None:
            return
        yield current.version
        newest = current.version.version_id
        for version_id in range(newest - 1, max(0, newest - count), -1):
            doc = self._history.find_one({"_id": f"{resource_type}/{resource_id}/{version_id}"})
            if doc is not None:
                yield StoredVersion.from_document(doc)

    def commit(self, previous: Current | None, new: StoredVersion) -> None:
        """Make `new` the current version if `previous` still is; else VersionConflict and nothing visible changed."""
        recent = list((previous.recent_jobs if previous else {}).items())[-(RECENT_JOBS_KEPT - 1):] + [(new.job_id, new.version_id)]
        # A sub-document (job id -> version) rather than pairs: FerretDB refuses nested arrays.
        document = {**new.to_document(), "recentJobs": dict(recent)}
        if previous is None:
            try:
                self._current.insert_one({"_id": new.key, **document})
            except DuplicateKeyError as exc:
                raise VersionConflict(f"{new.key} was created concurrently") from exc
            return
        self._keep_in_history(previous.version)
        done = self._current.update_one({"_id": new.key, "versionId": previous.version.version_id}, {"$set": document})
        if done.matched_count != 1:
            raise VersionConflict(f"{new.key} is no longer at version {previous.version.version_id}")

    def _keep_in_history(self, version: StoredVersion) -> None:
        try:
            self._history.insert_one({"_id": f"{version.key}/{version.version_id}", **version.to_document()})
        except DuplicateKeyError:
            pass  # already kept by an earlier attempt: history is append-only and copies are identical
