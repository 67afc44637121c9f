"""Which resources carry an identifier (system|value), for conditional targets such as `Organization?identifier=s|v`.

Two documents per identifier, each addressed by its `_id` so that a lookup is one
key read whatever the index holds:

- `sys|Type|system|value`: the ids of resources of Type carrying exactly that
  system and value (system '' for an identifier without one);
- `any|Type|value`: the ids carrying that value under any system.

Ids are added (`$addToSet`, upserted by `_id`) before the version that adds the
identifier is committed, so the index can hold too much (a commit that then
failed, an identifier removed later) but never too little; callers check each
candidate against the resource's newest version.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from worker.storage import keyed


def exact_key(resource_type: str, system: str, value: str) -> str:
    return f"sys|{resource_type}|{system}|{value}"


def any_system_key(resource_type: str, value: str) -> str:
    return f"any|{resource_type}|{value}"


class IdentifierIndex:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._entries: Collection[dict[str, Any]] = db["identifier_index"]

    def add(self, entries: list[tuple[str, str, str, str]]) -> None:
        """(type, system, value, id) entries, one round trip; ids present already are kept once."""
        additions: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"ids": []})
        for resource_type, system, value, resource_id in entries:
            additions[exact_key(resource_type, system, value)]["ids"].append(resource_id)
            additions[any_system_key(resource_type, value)]["ids"].append(resource_id)
        keyed.add_to_sets(self._entries, additions)

    def candidates(self, resource_type: str, system: str | None, value: str) -> list[str]:
        """Ids that may carry the identifier (system None: any system)."""
        key = any_system_key(resource_type, value) if system is None else exact_key(resource_type, system, value)
        doc = keyed.get(self._entries, key)
        return sorted(str(i) for i in (doc or {}).get("ids", []))
