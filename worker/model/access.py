"""Who is asking and what they may do: SMART on FHIR scopes, the actor a job carries (errors: worker/errors.py).

Pure: no JWT, no HTTP. The API turns a verified token into a `Principal`
(api/auth.py); everything after that (routes, bundle entries, feed lines, the
worker's check of a PUT that turns out to create) asks the same `Grants`.

Scopes (SMART App Launch 1 and 2; `user/` and `patient/` count like
`system/`, since this server has no patient compartment):

    system/Organization.write    v1: read = r s, write = c u d, * = c r u d s
    system/*.cruds               v2: any of c r u d s, in that order
    system/metrics.read          /metrics
    system/jobs.admin            with system/*.cruds: poll and cancel anyone's jobs

A v2 scope with a query (`system/Observation.rs?category=...`) grants nothing:
this server cannot enforce the restriction, so it does not pretend to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import FhirError, Forbidden, Issue

READ, CREATE, UPDATE, DELETE, SEARCH = "r", "c", "u", "d", "s"
ALL = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": ALL}
_SCOPE = re.compile(r"^(?:system|user|patient)/(?P<type>\*|[A-Za-z]+)\.(?P<perm>[a-z*]+)$")
_NAMES = {READ: "read", CREATE: "create", UPDATE: "update", DELETE: "delete", SEARCH: "search"}


@dataclass(frozen=True)
class Grants:
    """Permission letters per resource type (`*` for every type), plus the two service scopes."""

    by_type: Mapping[str, str]
    metrics: bool = False
    jobs_admin: bool = False

    @classmethod
    def parse(cls, scope: str) -> Grants:
        by_type: dict[str, str] = {}
        for item in scope.split():
            found = _SCOPE.fullmatch(item)
            if found is None:
                continue  # openid, fhirUser, launch, scopes with a query...: grant no resource access
            letters = _letters(found["perm"])
            if letters is not None:
                by_type[found["type"]] = "".join(p for p in ALL if p in letters or p in by_type.get(found["type"], ""))
        words = set(scope.split())
        metrics = bool(words & {"system/metrics.read", "user/metrics.read"})
        admin = "system/jobs.admin" in words and by_type.get("*") == ALL
        by_type.pop("metrics", None)
        by_type.pop("jobs", None)
        return cls(by_type, metrics, admin)

    @classmethod
    def everything(cls) -> Grants:
        return cls({"*": ALL}, True, True)

    def on(self, resource_type: str) -> str:
        """The permission letters granted on `resource_type`."""
        return "".join(p for p in ALL if p in self.by_type.get(resource_type, "") or p in self.by_type.get("*", ""))

    def allows(self, resource_type: str, permission: str) -> bool:
        return permission in self.on(resource_type)


def _letters(perm: str) -> str | None:
    if perm in _V1:
        return _V1[perm]
    if (
        perm
        and all(p in ALL for p in perm)
        and list(perm) == sorted(perm, key=ALL.index)
        and len(set(perm)) == len(perm)
    ):
        return perm
    return None


@dataclass(frozen=True)
class Principal:
    """The verified caller: `subject` owns the jobs it submits, `client_id` is counted and policed."""

    subject: str
    client_id: str
    grants: Grants

    def require(self, resource_type: str, *permissions: str, where: str = "") -> str:
        """The granted letters among `permissions` (any one suffices); Forbidden naming the scope otherwise."""
        granted = "".join(p for p in permissions if self.grants.allows(resource_type, p))
        if granted:
            return granted
        wanted = " or ".join(f"system/{resource_type}.{p}" for p in permissions)
        names = " or ".join(_NAMES[p] for p in permissions)
        prefix = f"{where}: " if where else ""
        raise Forbidden(
            f"{prefix}{names} of {resource_type} needs the scope {wanted} (or system/*.{permissions[0]}, or the v1 "
            f"system/{resource_type}.{'read' if permissions[0] in 'rs' else 'write'}); the token does not grant it",
            where or resource_type,
        )

    def owns(self, owner: str | None) -> bool:
        """May this caller see a job owned by `owner`? Its own, or any with system/jobs.admin."""
        return self.grants.jobs_admin or owner == self.subject


ANONYMOUS = Principal("anonymous", "anonymous", Grants.everything())


@dataclass(frozen=True)
class Trace:
    """Where a request says it comes from, kept with each job it makes (Provenance, polling, logs): its
    X-Request-Id, and the headers the deployment records (FHIR_PATCH_REQUIRED_HEADERS, then
    FHIR_PATCH_CORRELATION_HEADER), as (lower-case name, value) pairs."""

    request_id: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def value(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)


NO_TRACE = Trace()


@dataclass(frozen=True)
class Actor:
    """Who asked for a job, carried with it to the worker (Provenance, client policies, creates by PUT)."""

    subject: str
    client_id: str
    rights: str = ALL  # the permission letters the token granted on the job's resource type
    trace: Trace = NO_TRACE

    @property
    def request_id(self) -> str:
        return self.trace.request_id

    def to_document(self) -> dict[str, Any]:
        doc = {"sub": self.subject, "client": self.client_id, "rights": self.rights, "requestId": self.request_id}
        # a list of objects: FerretDB stores no nested arrays, and a header name may hold a dot
        headers = [{"name": n, "value": v} for n, v in self.trace.headers]
        return {**doc, "headers": headers} if headers else doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> Actor | None:
        if not doc:
            return None
        headers = tuple((str(h["name"]), str(h["value"])) for h in doc.get("headers") or ())
        trace = Trace(str(doc.get("requestId") or ""), headers)
        return cls(str(doc["sub"]), str(doc["client"]), str(doc.get("rights", ALL)), trace)

    def may(self, permission: str, resource_type: str) -> None:
        """Forbidden unless the token allowed `permission` (checked in the worker, where a PUT learns it creates)."""
        if permission not in self.rights:
            action = "creating" if permission == CREATE else "updating"
            raise Forbidden(
                f"{action} {resource_type} needs the scope system/{resource_type}.{permission}; the token "
                f"granted only {self.rights or 'nothing'} on it",
                resource_type,
            )


def forbidden_issues(issues: list[Issue]) -> FhirError:
    """A client-policy violation: the same issues, as 403 forbidden."""
    return Forbidden.of(
        [
            Issue(
                "forbidden",
                i.diagnostics.replace("cannot be changed here", "cannot be changed by this client"),
                i.expression,
                i.severity,
            )
            for i in issues
        ]
    )
