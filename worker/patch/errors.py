"""The root of every error the service answers with, and the engine's family of it.

`FhirError` carries an HTTP status and an OperationOutcome; everything the
service refuses or fails is one (worker/errors.py draws the whole tree and
defines the families outside the engine). It lives here because the engine
imports nothing else of ours. The engine's own errors are `PatchError`s, and
their status codes are decided here, once per kind:

    400  the patch document is malformed (MalformedPatch), or asks to change
         what may not change (ForbiddenChange: server-owned or policy-locked)
    415  the media type is not a patch format (UnsupportedPatchFormat)
    422  a well-formed patch that cannot be applied (NotApplicable and its
         kinds), or whose result is not a valid resource (InvalidResource)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self


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


class FhirError(Exception):
    """Root of every error the service answers with: `.status` (HTTP), `.outcome` (OperationOutcome) and
    `.headers` (for the HTTP answer: WWW-Authenticate, Retry-After)."""

    status = 500
    code = "exception"
    headers: Mapping[str, str] = {}

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
    def of(cls, issues: Sequence[Issue]) -> Self:
        return cls(issues[0].diagnostics, issues=issues)


class PatchError(FhirError):
    """The engine's family: the patch document, or what it does to the resource."""


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
