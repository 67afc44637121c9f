"""Which resources carry an identifier (system|value), for conditional targets such as `Organization?identifier=s|v`.

Entries are inserted before the version that adds the identifier is committed,
so the index can hold too much (a commit that then failed, an identifier
removed later) but never too little; callers check each candidate against the
resource's newest version. One document per (type, system, value, id), its
`_id` built from them: an insert is a no-op when present.
"""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError


def _prefix(resource_type: str, system: str | None, value: str) -> str:
    return f"{resource_type}|{system or ''}|{value}|"


class IdentifierIndex:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._entries: Collection[dict[str, Any]] = db["identifiers"]

    def add(self, entries: list[tuple[str, str, str, str]]) -> None:
        """(type, system, value, id) entries; those present already are skipped."""
        if not entries:
            return
        docs = [{"_id": _prefix(t, s, v) + i, "type": t, "system": s, "value": v, "id": i} for t, s, v, i in entries]
        try:
            self._entries.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    def candidates(self, resource_type: str, system: str | None, value: str) -> list[str]:
        """Ids that may carry the identifier (system None: any system)."""
        if system is not None:
            start = _prefix(resource_type, system, value)
            query: dict[str, Any] = {"_id": {"$gte": start, "$lt": start + "\uffff"}}
        else:
            query = {"type": resource_type, "value": value}
        return sorted({str(doc["id"]) for doc in self._entries.find(query, {"id": 1})})
