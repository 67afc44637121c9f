"""One stored version of one resource, as the stores keep it and the service and API read it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.model.changes import stamped
from worker.model.jobs import JobRequest
from worker.model.provenance import provenance_text
from worker.patch.fhir_json import dumps, loads_checked_before


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
    transaction: str = ""  # set: visible only once that transaction's result (its commit point) is recorded
    provenance: str | None = None  # the version's Provenance (FHIR JSON), written in the same insert

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
        parsed = loads_checked_before(self.text)
        assert isinstance(parsed, dict)
        return parsed

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": f"{self.key}/{self.version_id}",
            "type": self.resource_type,
            "id": self.resource_id,
            "versionId": self.version_id,
            "lastUpdated": self.last_updated,
            "deleted": self.deleted,
            "json": self.text,
            "job": self.job_id,
            "action": self.action,
            "txn": self.transaction,
            "prov": self.provenance,
        }

    def to_cache(self) -> str:
        """The copy kept in Redis for reads and planning: one line of metadata (JSON), a newline, then the
        resource's own text as it is (empty for a deletion). The text is not escaped into a JSON string, so it is
        neither quoted on the way in nor unquoted on the way out (no Provenance: the copy serves reads only)."""
        meta = {
            "type": self.resource_type,
            "id": self.resource_id,
            "versionId": self.version_id,
            "lastUpdated": self.last_updated.isoformat(),
            "deleted": self.deleted,
            "job": self.job_id,
            "action": self.action,
            "txn": self.transaction,
        }
        return json.dumps(meta) + "\n" + (self.text or "")

    @classmethod
    def from_cache(cls, cached: str) -> StoredVersion:
        line, _, text = cached.partition("\n")
        meta = json.loads(line)
        return cls(
            meta["type"],
            meta["id"],
            meta["versionId"],
            datetime.fromisoformat(meta["lastUpdated"]),
            None if meta["deleted"] else text,
            meta.get("job", ""),
            meta.get("action", ""),
            meta.get("txn") or "",
        )

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> StoredVersion:
        return cls(
            doc["type"],
            doc["id"],
            doc["versionId"],
            doc["lastUpdated"],
            doc.get("json"),
            doc.get("job", ""),
            doc.get("action", ""),
            doc.get("txn") or "",
            doc.get("prov"),
        )


def planned_version(
    job_id: str,
    request: JobRequest,
    resource: dict[str, Any] | None,
    version_id: int,
    now: datetime,
    transaction: str = "",
) -> StoredVersion:
    """Version `version_id` of the request's resource as a job writes it: stamped (id, meta) and carrying its
    Provenance; `resource` None writes a deletion. A transaction's versions carry its id (visible at its commit)."""
    text = dumps(stamped(resource, request.resource_id, version_id, now)) if resource is not None else None
    return StoredVersion(
        request.resource_type,
        request.resource_id,
        version_id,
        now,
        text,
        job_id,
        request.action.value,
        transaction=transaction,
        provenance=provenance_text(request, version_id, now, text is None, job_id),
    )
