"""Finding resources by identifier or id: conditional targets (`PATCH Type?identifier=system|value`, `?_id=x`)
and search (`GET Type?identifier=...`).

Only `_id` lookups and the identifier index are used: key lookups, whatever the
size of the store. The identifier index may hold too much, never too little
(see IdentifierIndex); each candidate is checked against its newest version,
deleted ones excluded. Conditional targets are resolved at intake, as FHIR
servers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from api.http import ID_PATTERN
from worker.errors import AmbiguousTarget, InvalidRequest, ResourceNotFound
from worker.model.changes import identifiers
from worker.model.stores import Stores
from worker.model.versions import StoredVersion

SEARCH_PARAMETERS = ("identifier", "_id")
_PAGING = ("_count",)


@dataclass(frozen=True)
class Criterion:
    """One search criterion: `identifier` (system None: any system; '': no system) or `_id`."""

    name: str
    value: str
    system: str | None = None

    @property
    def system_only(self) -> bool:
        """`identifier=system|`: every resource with an identifier of that system, whatever its value."""
        return self.name == "identifier" and bool(self.system) and not self.value

    @property
    def token(self) -> str:
        return self.value if self.name == "_id" or self.system is None else f"{self.system}|{self.value}"

    @property
    def shown(self) -> str:
        return f"{self.name}={self.token}"


def parse_criterion(query: str, allowed_extra: tuple[str, ...] = ()) -> Criterion:
    """The one criterion of a query string; 400 naming the supported parameters for anything else."""
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in allowed_extra]
    unknown = sorted({k for k, _ in params if k not in SEARCH_PARAMETERS})
    if unknown:
        raise InvalidRequest(
            f"Unsupported search parameter {', '.join(unknown)}; supported: {', '.join(SEARCH_PARAMETERS)} "
            f"(one of them, once){' and ' + ', '.join(allowed_extra) if allowed_extra else ''}",
            "request.url",
        )
    if len(params) != 1 or not params[0][1]:
        raise InvalidRequest(
            f"Give exactly one criterion: identifier=system|value, identifier=|value, identifier=value "
            f"or _id=id, not {query!r}",
            "request.url",
        )
    name, token = params[0]
    if name == "_id":
        if not ID_PATTERN.fullmatch(token):
            raise InvalidRequest(f"_id {token!r} is not a FHIR id", "_id")
        return Criterion("_id", token)
    if "|" not in token:
        return Criterion("identifier", token, None)
    system, value = token.split("|", 1)
    if not value and not system:
        raise InvalidRequest(f"identifier {token!r} names neither a system nor a value", "identifier")
    return Criterion("identifier", value, system)


@dataclass(frozen=True)
class Page:
    """One page of a `system|` search, and where the next one starts (None: this was the last)."""

    found: list[StoredVersion]
    next_token: str | None


class ConditionalResolver:
    def __init__(self, database: Stores) -> None:
        self._db = database

    def search_system(self, resource_type: str, criterion: Criterion, count: int, token: str) -> Page:
        """Up to `count` live resources with an identifier of the criterion's system, from the page `token`
        (`bucket.offset` of the identifier index's buckets for that system; '' for the first page)."""
        assert criterion.system is not None
        bucket, offset = _page_start(token)
        found: list[StoredVersion] = []
        for number, ids in self._db.identifiers.with_system(resource_type, criterion.system, bucket):
            start = offset if number == bucket else 0
            for position in range(start, len(ids)):
                if len(found) == count:
                    return Page(found, f"{number}.{position}")
                newest = self._db.resources.newest(resource_type, ids[position])
                if newest is not None and not newest.deleted and _carries(newest, criterion):
                    found.append(newest)
        return Page(found, None)

    def search(self, resource_type: str, criterion: Criterion) -> list[StoredVersion]:
        """The newest version of each live resource of `resource_type` matching the criterion, by id."""
        if criterion.name == "_id":
            candidates = [criterion.value]
        else:
            candidates = sorted(set(self._db.identifiers.candidates(resource_type, criterion.system, criterion.value)))
        found = []
        for resource_id in candidates:
            newest = self._db.resources.newest(resource_type, resource_id)
            if newest is not None and not newest.deleted and _carries(newest, criterion):
                found.append(newest)
        return found

    def resolve(self, resource_type: str, query: str, allowed_extra: tuple[str, ...] = ()) -> str:
        """The id of the one live resource of `resource_type` a conditional target names (404 none, 412 several);
        `allowed_extra`: the request's own parameters, which are no part of the condition."""
        criterion = parse_criterion(query, allowed_extra)
        if criterion.system_only:
            raise InvalidRequest(
                f"{criterion.shown} names a system only; a conditional target needs system|value, |value, value or _id",
                "request.url",
            )
        matches = [v.resource_id for v in self.search(resource_type, criterion)]
        shown = f"{resource_type}?{criterion.shown}"
        if not matches:
            raise ResourceNotFound(f"No {resource_type} matches {shown}", "request.url")
        if len(matches) > 1:
            raise AmbiguousTarget(
                f"{shown} matches {len(matches)} resources ({', '.join(matches[:5])}); it must name one", "request.url"
            )
        return matches[0]


def _carries(version: StoredVersion, criterion: Criterion) -> bool:
    if criterion.name == "_id":
        return True
    if criterion.system_only:
        return any(s == criterion.system for s, _ in identifiers(version.resource()))
    return any(
        v == criterion.value and (criterion.system is None or s == criterion.system)
        for s, v in identifiers(version.resource())
    )


def _page_start(token: str) -> tuple[int, int]:
    if not token:
        return 0, 0
    bucket, _, offset = token.partition(".")
    if not (bucket.isascii() and bucket.isdigit() and offset.isascii() and offset.isdigit()) or len(token) > 20:
        raise InvalidRequest(f"_page {token!r} is not a page of this search; follow the Bundle's next link", "_page")
    return int(bucket), int(offset)
