"""A diff as an HTTP answer: which format the caller asked for, and the answer itself (`$diff`, dry runs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from api.http import fhir_response
from worker.errors import InvalidRequest
from worker.patch.diff import FHIRPATH_PATCH_MEDIA, JSON_PATCH_MEDIA, diff_as
from worker.patch.fhir_json import dumps


@dataclass(frozen=True)
class Wanted:
    """How the caller wants the diff: the patch format (a media type) and whether `meta` takes part."""

    media: str
    include_meta: bool


def diff_wanted(request: Request) -> Wanted:
    """The answer's format from Accept (RFC 6902 when it names application/json-patch+json), `includeMeta`."""
    accept = request.headers.get("accept", "").lower()
    media = JSON_PATCH_MEDIA if JSON_PATCH_MEDIA in accept else FHIRPATH_PATCH_MEDIA
    raw = request.query_params.get("includeMeta", "false").lower()
    if raw not in ("true", "false"):
        raise InvalidRequest(f"includeMeta must be true or false, not {raw!r}", "includeMeta")
    return Wanted(media, raw == "true")


def diff_response(
    wanted: Wanted, old: dict[str, Any], new: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The change from `old` to `new` in the wanted format, with `status` and `headers`."""
    change = diff_as(wanted.media, old, new, wanted.include_meta)
    if wanted.media == JSON_PATCH_MEDIA:
        return Response(dumps(change).encode(), status, headers, media_type=JSON_PATCH_MEDIA)
    return fhir_response(change, status, headers)
