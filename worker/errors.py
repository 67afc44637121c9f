"""The service's one exception tree: every error carries its HTTP status and its OperationOutcome.

    FhirError                         root (worker/patch/errors.py: the engine imports nothing of ours)
    ├── PatchError                    the engine: the patch document and what it does
    │   ├── MalformedPatch            400
    │   ├── ForbiddenChange           400  server-owned or policy-locked element
    │   ├── UnsupportedPatchFormat    415
    │   ├── NotApplicable             422  (TestFailed, TargetNotFound, MultipleMatches, ElementExists,
    │   │                                    WrongStructure)
    │   └── InvalidResource           422
    ├── InteractionError              the target resource and its version
    │   ├── ResourceNotFound          404
    │   ├── ResourceExists            409
    │   ├── ResourceGone              410
    │   ├── VersionMismatch           412  If-Match names another version
    │   └── AmbiguousTarget           412  a conditional target matches several resources
    ├── RequestError                  the HTTP request around it
    │   ├── InvalidRequest            400  a header, parameter or Bundle entry is wrong
    │   ├── UnknownJob                404  no such job, or it expired
    │   ├── JobStarted                409  too late to cancel
    │   ├── NotAcceptable             406  Accept names only another FHIR version
    │   ├── BodyTooLarge              413
    │   ├── UnsupportedMediaType      415  not a media type this route takes
    │   └── IdempotencyKeyReused      422  the same key with another body
    ├── AccessError                   who is asking
    │   ├── Unauthenticated           401  (WWW-Authenticate)
    │   └── Forbidden                 403
    └── Unavailable                   not now (Retry-After)
        ├── TooManyUnfinished         429  the client's backpressure limit
        ├── ServiceBusy               503  the service's limit, or the job queue cannot be reached
        └── StorageUnavailable        503  MongoDB or Redis failed (translated where they are called)

The API answers every one with one handler (api/http.py); a job records its
own as its result. Signals that never leave the service (a lost lease, a
compare-and-set that lost, a job over its time budget) are not errors of this
tree: they are returned values or private exceptions of the module that
raises and catches them.
"""

from __future__ import annotations

from typing import Any

from worker.patch.errors import (
    ElementExists,
    FhirError,
    ForbiddenChange,
    InvalidResource,
    Issue,
    MalformedPatch,
    MultipleMatches,
    NotApplicable,
    PatchError,
    TargetNotFound,
    TestFailed,
    UnsupportedPatchFormat,
    WrongStructure,
    operation_outcome,
)

__all__ = [
    "AccessError",
    "AmbiguousTarget",
    "BodyTooLarge",
    "ElementExists",
    "FhirError",
    "Forbidden",
    "ForbiddenChange",
    "IdempotencyKeyReused",
    "InteractionError",
    "InvalidRequest",
    "InvalidResource",
    "Issue",
    "JobStarted",
    "MalformedPatch",
    "MultipleMatches",
    "NotAcceptable",
    "NotApplicable",
    "PatchError",
    "RequestError",
    "ResourceExists",
    "ResourceGone",
    "ResourceNotFound",
    "ServiceBusy",
    "StorageUnavailable",
    "TargetNotFound",
    "TestFailed",
    "TooManyUnfinished",
    "Unauthenticated",
    "Unavailable",
    "UnknownJob",
    "UnsupportedMediaType",
    "UnsupportedPatchFormat",
    "VersionMismatch",
    "WrongStructure",
    "operation_outcome",
]


class InteractionError(FhirError):
    """The target resource and its version."""


class ResourceNotFound(InteractionError):
    status = 404
    code = "not-found"


class ResourceExists(InteractionError):
    status = 409
    code = "duplicate"


class ResourceGone(InteractionError):
    status = 410
    code = "deleted"


class VersionMismatch(InteractionError):
    status = 412
    code = "conflict"


class AmbiguousTarget(InteractionError):
    status = 412
    code = "multiple-matches"


class RequestError(FhirError):
    """The HTTP request around the change."""


class InvalidRequest(RequestError):
    status = 400
    code = "invalid"


class UnknownJob(RequestError):
    status = 404
    code = "not-found"


class JobStarted(RequestError):
    status = 409
    code = "conflict"


class BodyTooLarge(RequestError):
    status = 413
    code = "too-costly"


class NotAcceptable(RequestError):
    status = 406
    code = "not-supported"


class UnsupportedMediaType(RequestError):
    status = 415
    code = "not-supported"


class IdempotencyKeyReused(RequestError):
    status = 422
    code = "business-rule"


class AccessError(FhirError):
    """An access decision."""


class Unauthenticated(AccessError):
    """401: no usable bearer token."""

    status = 401
    code = "login"

    def __init__(self, diagnostics: str, challenge: str = 'Bearer error="invalid_token"', **kwargs: Any) -> None:
        super().__init__(diagnostics, "Authorization", **kwargs)
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(AccessError):
    """403: the token is valid but does not allow this."""

    status = 403
    code = "forbidden"


class Unavailable(FhirError):
    """Not now: the answer carries Retry-After."""

    def __init__(self, diagnostics: str, *expression: str, retry_after: int = 5, **kwargs: Any) -> None:
        super().__init__(diagnostics, *expression, **kwargs)
        self.headers = {"Retry-After": str(retry_after)}


class TooManyUnfinished(Unavailable):
    """429: the client has too many jobs not yet finished."""

    status = 429
    code = "throttled"


class ServiceBusy(Unavailable):
    """503: the whole service is at its queue limit, or cannot check tokens or reach its queue right now."""

    status = 503
    code = "transient"


class StorageUnavailable(ServiceBusy):
    """503: MongoDB or Redis failed a call (the foreign exception is its __cause__)."""
