"""FHIR HTTP details: media types, ETag/If-Match, Prefer, bodies with a size limit, OperationOutcome answers."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.errors import BodyTooLarge, FhirError, InvalidRequest, Issue, StorageUnavailable, operation_outcome
from worker.model.jobs import REASONS
from worker.patch.fhir_json import dumps
from worker.settings import Settings

FHIR_JSON = "application/fhir+json; charset=utf-8"
log = logging.getLogger("fhir_patch.api")
_IF_MATCH = re.compile(r'^\s*(?:W/)?"([0-9]{1,9})"\s*$')  # ASCII digits only; FHIR versions here are 32-bit
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_SNAPSHOT_MODES = ("TAG", "PROFILE", "SECURITY_LABEL")
# Smile CDR's and (newer) HAPI's ask to retry a write that meets a version conflict.
RETRY_ON_CONFLICT_HEADERS = ("X-Retry-On-Version-Conflict", "HAPI-Retry-On-Version-Conflict")
_RETRY_ON_CONFLICT = re.compile(r"\s*retry\s*(?:;\s*max-retries\s*=\s*([0-9]{1,4})\s*)?", re.IGNORECASE)


def fhir_response(
    body: str | dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    content = body if isinstance(body, str) or body is None else dumps(body)
    # "replace": an outcome may quote a lone surrogate from the client's own patch; it must not break the answer.
    return Response(
        content=content.encode("utf-8", "replace") if content is not None else b"",
        status_code=status,
        headers=headers,
        media_type=FHIR_JSON if content is not None else None,
    )


def outcome_response(status: int, outcome: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return fhir_response(outcome, status, headers)


def error_response(error: FhirError) -> Response:
    headers = dict(error.headers) or None
    return outcome_response(error.status, error.outcome, headers)


def host_check(settings: Settings) -> Callable[[Request], None]:
    """A dependency for every route: URLs in answers are built from the Host header only when no base URL is
    configured, and then only for the configured host names (a forged Host is never echoed into a Location)."""
    allowed = {name.strip("[]").lower() for name in settings.allowed_hosts}

    def check(request: Request) -> None:
        if settings.base_url:
            return
        try:
            host, _ = request.url.hostname, request.url.port
        except ValueError as exc:
            raise InvalidRequest("The Host header is not a host name and port", "Host") from exc
        if (host or "").lower() not in allowed:
            raise InvalidRequest(
                f"The Host header names {host!r}, which this server does not serve (FHIR_PATCH_ALLOWED_HOSTS)", "Host"
            )

    return check


def log_refusal(request: Request, error: FhirError) -> None:
    """A structured event for every 401/403: who, which client, which route, why. Never the token."""
    principal = getattr(request.state, "principal", None)
    traced = getattr(request.state, "trace", None)
    log_refusal_event(
        principal, f"{request.method} {request.url.path}", "", error, dict(getattr(traced, "headers", ()))
    )


def log_refusal_event(
    principal: Any, route: str, where: str, error: FhirError, headers: dict[str, str] | None = None
) -> None:
    log.warning(
        "access refused",
        extra={
            "event": "access.refused",
            "status": error.status,
            "subject": getattr(principal, "subject", None),
            "client": getattr(principal, "client_id", None),
            "route": route,
            "entry": where or None,
            "reason": error.diagnostics,
            **({"headers": headers} if headers else {}),
        },
    )


def http_date(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def parse_if_match(value: object) -> int | None:
    """`W/"3"` (or `"3"`) -> 3; anything else is a 400 naming the header."""
    if value is None:
        return None
    found = _IF_MATCH.fullmatch(value) if isinstance(value, str) else None
    if not found:
        raise InvalidRequest(f'If-Match must be a version ETag such as W/"3", got {value!r}', "If-Match")
    return int(found.group(1))


async def check_retry_on_conflict(request: Request) -> None:
    """`X-Retry-On-Version-Conflict` / `HAPI-Retry-On-Version-Conflict`: `retry` or `retry; max-retries=N`, accepted
    and never needed here: one resource's writes are applied one at a time in arrival order, so a write without
    If-Match meets no version conflict to retry (with If-Match, a mismatch is the client's own 412). A malformed
    value is a 400 naming the header, before anything is read or written. Async, so that FastAPI runs it on the
    event loop rather than sending every request on these routes through its thread pool for two header reads."""
    for name in RETRY_ON_CONFLICT_HEADERS:
        value = request.headers.get(name)
        if value is not None and not _RETRY_ON_CONFLICT.fullmatch(value):
            raise InvalidRequest(
                f"{name} must be 'retry' or 'retry; max-retries=N' (N a whole number up to 9999), got {value!r}", name
            )


def parse_prefer(value: str | None) -> dict[str, str]:
    """`Prefer: return=minimal, respond-async` -> {"return": "minimal", "respond-async": ""}."""
    prefs: dict[str, str] = {}
    for part in (value or "").replace(";", ",").split(","):
        name, _, val = part.strip().partition("=")
        if name:
            prefs[name.strip().lower()] = val.strip().strip('"').lower()
    return prefs


def parse_snapshot_mode(value: str | None) -> tuple[str, ...]:
    modes = tuple(m.strip().upper() for m in (value or "").split(",") if m.strip())
    unknown = [m for m in modes if m not in _SNAPSHOT_MODES]
    if unknown:
        raise InvalidRequest(
            f"X-Meta-Snapshot-Mode accepts {', '.join(_SNAPSHOT_MODES)}, not {', '.join(unknown)}",
            "X-Meta-Snapshot-Mode",
        )
    return modes


def check_id(resource_id: str) -> str:
    if not ID_PATTERN.fullmatch(resource_id):
        raise InvalidRequest(f"{resource_id!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)", "id")
    return resource_id


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"The body is {declared} bytes; the limit is {limit}", "Content-Length")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as an OperationOutcome with the status decided by the FhirError tree; never a stack trace."""

    @app.exception_handler(FhirError)
    async def _fhir_error(request: Request, exc: FhirError) -> Response:
        if isinstance(exc, StorageUnavailable):  # raised before anything was accepted (or withdrawn where it was)
            log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc.__cause__)
        if exc.status in (401, 403):
            log_refusal(request, exc)
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not-found" if exc.status_code == 404 else "not-supported" if exc.status_code == 405 else "processing"
        text = f"{request.method} {request.url.path}: {exc.detail or REASONS.get(exc.status_code, '')}"
        return outcome_response(exc.status_code, operation_outcome([Issue(code, text)]), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        issues = [
            Issue("invalid", str(e.get("msg")), (".".join(str(p) for p in e.get("loc", ())),)) for e in exc.errors()
        ]
        return outcome_response(400, operation_outcome(issues or [Issue("invalid", "Invalid request")]))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return outcome_response(
            500,
            operation_outcome(
                [Issue("exception", f"Internal error ({type(exc).__name__}); the request was not applied")]
            ),
        )
