"""The engine's one exception tree, and OperationOutcome building.

Every failure leaving the engine is a `PatchError` carrying an HTTP status and
an OperationOutcome. Status codes are decided here, once per kind:

    400  the patch document is malformed (MalformedPatch), or asks to change
         what may not change (ForbiddenChange: server-owned or policy-locked)
    415  the media type is not a patch format (UnsupportedPatchFormat)
    422  a well-formed patch that cannot be applied (NotApplicable and its
         kinds), or whose result is not a valid resource (InvalidResource)

and for the interaction around it (the target resource and its version):

    404  no such resource (ResourceNotFound)
    409  the resource exists where a create expected none (ResourceExists)
    410  the resource was deleted (ResourceGone)
    412  If-Match names another version (VersionMismatch), or a conditional
         target matches several resources (AmbiguousTarget)

and for the HTTP request carrying it:

    400  a header or parameter is wrong (InvalidRequest)
    404  no such job, or it expired (UnknownJob)
    409  too late to cancel (JobStarted)
    413  the body is over the configured limit (BodyTooLarge)
    422  an Idempotency-Key reused with a different body (IdempotencyKeyReused)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: FHIR code, a sentence, and where."""

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


@dataclass
class Warnings:
    """Warnings collected while applying a patch (e.g. normalised feed quirks)."""

    issues: list[Issue] = field(default_factory=list)

    def add(self, diagnostics: str, *expression: str, code: str = "informational") -> None:
        self.issues.append(Issue(code, diagnostics, tuple(expression), severity="warning"))

    def outcome(self) -> dict[str, Any] | None:
        return operation_outcome(self.issues) if self.issues else None


class PatchError(Exception):
    """Root of every engine error: `.status` (HTTP) and `.outcome` (OperationOutcome)."""

    status = 500
    code = "exception"

    def __init__(
        self, diagnostics: str, *expression: str, code: str | None = None, issues: Sequence[Issue] | None = None
    ) -> None:
        super().__init__(diagnostics)
        self.issues: tuple[Issue, ...] = (
            tuple(issues) if issues else (Issue(code or self.code, diagnostics, tuple(e for e in expression if e)),)
        )

    @property
    def diagnostics(self) -> str:
        return self.issues[0].diagnostics

    @property
    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)

    @classmethod
    def of(cls, issues: Sequence[Issue]) -> PatchError:
        return cls(issues[0].diagnostics, issues=issues)


class MalformedPatch(PatchError):
    """The patch document itself is wrong: syntax, unknown operation, missing or extra part."""

    status = 400
    code = "invalid"


class UnsupportedPatchFormat(PatchError):
    status = 415
    code = "not-supported"


class ForbiddenChange(PatchError):
    """The patch changes what the server owns or what the element policy locks."""

    status = 400
    code = "not-supported"


class NotApplicable(PatchError):
    """A well-formed patch that cannot be applied to this resource."""

    status = 422
    code = "processing"


class TestFailed(NotApplicable):
    __test__ = False  # not a pytest test class
    code = "processing"


class TargetNotFound(NotApplicable):
    code = "not-found"


class MultipleMatches(NotApplicable):
    code = "multiple-matches"


class ElementExists(NotApplicable):
    code = "duplicate"


class WrongStructure(NotApplicable):
    """The operation does not fit the resource's structure (unknown element, not a list...)."""

    code = "structure"


class InvalidResource(PatchError):
    """The patched resource is not a valid FHIR R4 resource."""

    status = 422
    code = "invalid"


class ResourceNotFound(PatchError):
    status = 404
    code = "not-found"


class ResourceExists(PatchError):
    status = 409
    code = "duplicate"


class ResourceGone(PatchError):
    status = 410
    code = "deleted"


class VersionMismatch(PatchError):
    status = 412
    code = "conflict"


class InvalidRequest(PatchError):
    status = 400
    code = "invalid"


class UnknownJob(PatchError):
    status = 404
    code = "not-found"


class JobStarted(PatchError):
    status = 409
    code = "conflict"


class BodyTooLarge(PatchError):
    status = 413
    code = "too-costly"


class IdempotencyKeyReused(PatchError):
    status = 422
    code = "business-rule"


class AmbiguousTarget(PatchError):
    status = 412
    code = "multiple-matches"
