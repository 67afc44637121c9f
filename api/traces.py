"""What a /fhir request must say about itself, checked before anything else runs: the headers the deployment
requires (FHIR_PATCH_REQUIRED_HEADERS), the correlation header (FHIR_PATCH_CORRELATION_HEADER) and the FHIR
version its Accept asks for. The values recorded become the request's `Trace`, kept with every job it makes;
the correlation value is echoed on the answer (`EchoCorrelation`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.tenancy import asks_of_its_reader
from worker.errors import InvalidRequest, NotAcceptable
from worker.model.access import Trace
from worker.settings import Settings

FHIR_VERSIONS = ("4.0", "4.0.1")  # R4 in the two spellings of the fhirVersion parameter
MAX_VALUE = 200
_VALUE = re.compile(rf"^[\x21-\x7e](?:[\x20-\x7e]{{0,{MAX_VALUE - 2}}}[\x21-\x7e])?$")  # visible ASCII, inner spaces
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,200}$")


def fhir_checks(settings: Settings) -> Callable[[Request], None]:
    """A dependency for every route: under /fhir (but metadata) the required and correlation headers; everywhere,
    the fhirVersion of Accept. The request's Trace is kept on `request.state.trace`."""
    recorded = (*settings.required_headers, *([settings.correlation_header] if settings.correlation_header else []))

    def check(request: Request) -> None:
        accepted_version(request.headers.getlist("accept"))
        if not asks_of_its_reader(request.scope["path"]):
            return
        for name in settings.required_headers:
            if not request.headers.get(name, "").strip():
                raise InvalidRequest(f"This server needs the header {name} on every request", name)
        headers = tuple((name, header_value(request, name)) for name in recorded if name in request.headers)
        request.state.trace = Trace(request_id(request), headers)

    return check


def header_value(request: Request, name: str) -> str:
    """A recorded header's value: one header, 1 to 200 visible ASCII characters (spaces inside), else 400."""
    values = request.headers.getlist(name)
    if len(values) != 1 or not _VALUE.fullmatch(values[0].strip()):
        raise InvalidRequest(
            f"The header {name} must be sent once, with 1 to {MAX_VALUE} visible ASCII characters", name
        )
    return values[0].strip()


def request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    if given is None:
        return ""
    if not _REQUEST_ID.fullmatch(given):
        raise InvalidRequest("X-Request-Id must be 1 to 200 visible ASCII characters", "X-Request-Id")
    return given


def trace(request: Request) -> Trace:
    """The request's Trace (fhir_checks made it; a route outside /fhir has only its X-Request-Id)."""
    made: Trace | None = getattr(request.state, "trace", None)
    return made if made is not None else Trace(request_id(request))


def accepted_version(accepts: list[str]) -> None:
    """406 when every media range of Accept that names a fhirVersion names one other than R4's (a range without
    the parameter, or any other media type, is served as R4)."""
    versions = [_fhir_version(media) for header in accepts for media in header.split(",")]
    named = [v for v in versions if v is not None]
    if named and len(named) == len(versions) and not any(v in FHIR_VERSIONS for v in named):
        raise NotAcceptable(
            f"Accept asks for fhirVersion {', '.join(sorted(set(named)))}; this server serves FHIR R4 only "
            f"(fhirVersion={' or '.join(FHIR_VERSIONS)}, or no fhirVersion)",
            "Accept",
        )


def _fhir_version(media: str) -> str | None:
    for parameter in media.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "fhirversion":
            return value.strip().strip('"')
    return None


class EchoCorrelation:
    """ASGI middleware: the answer carries the correlation header the request sent, unless the route set it (a
    poll answers with the value its job was submitted with). Pure ASGI, so it costs one header scan per request."""

    def __init__(self, app: ASGIApp, header: str) -> None:
        self._app = app
        self._header = header.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        sent = [value for name, value in scope["headers"] if name == self._header]
        if len(sent) != 1 or not _VALUE.fullmatch(sent[0].decode("latin-1").strip()):
            await self._app(scope, receive, send)
            return

        async def echoing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == self._header for name, _ in headers):
                    message = {**message, "headers": [*headers, (self._header, sent[0].strip())]}
            await send(message)

        await self._app(scope, receive, echoing)
