"""Conditional targets: `Type?identifier=system|value` -> the one resource it names (404 none, 412 several).

The identifier index may hold too much, never too little (see IdentifierIndex);
each candidate is checked against its newest version, deleted ones excluded.
Resolution happens at intake, as FHIR servers do for conditional requests.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from worker.changes import identifiers
from worker.patch.errors import AmbiguousTarget, InvalidRequest, ResourceNotFound
from worker.storage import Database


def parse_condition(query: str) -> tuple[str | None, str]:
    """`identifier=s|v` -> (s, v); `identifier=|v` -> ('', v) (no system); `identifier=v` -> (None, v) (any system)."""
    params = parse_qsl(query, keep_blank_values=True)
    if len(params) != 1 or params[0][0] != "identifier" or not params[0][1]:
        raise InvalidRequest(f"A conditional target takes exactly one identifier=system|value parameter, not {query!r}", "request.url")
    token = params[0][1]
    if "|" not in token:
        return None, token
    system, value = token.split("|", 1)
    return system, value


class ConditionalResolver:
    def __init__(self, database: Database) -> None:
        self._db = database

    def resolve(self, resource_type: str, query: str) -> str:
        """The id of the one live resource of `resource_type` matching the query."""
        system, value = parse_condition(query)
        matches = [rid for rid in self._db.identifiers.candidates(resource_type, system, value)
                   if self._carries(resource_type, rid, system, value)]
        shown = f"{resource_type}?{query}"
        if not matches:
            raise ResourceNotFound(f"No {resource_type} matches {shown}", "request.url")
        if len(matches) > 1:
            raise AmbiguousTarget(f"{shown} matches {len(matches)} resources ({', '.join(matches[:5])}); it must name one", "request.url")
        return matches[0]

    def _carries(self, resource_type: str, resource_id: str, system: str | None, value: str) -> bool:
        newest = self._db.resources.newest(resource_type, resource_id)
        if newest is None or newest.deleted:
            return False
        return any(v == value and (system is None or s == system) for s, v in identifiers(newest.resource()))
