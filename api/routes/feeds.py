"""Bulk feeds: `POST /fhir/$bulk-submit` (NDJSON, streamed), progress on `/_async/{group}`, results as NDJSON.

The name follows the FHIR bulk-data convention of `$`-operations at the base; a
feed is not a Bundle, so it does not go to `POST /fhir`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from api.auth import Caller
from api.deps import connections, fhir_base, query_number
from api.dry_runs import DRY_RUN, dry_run_asked
from api.group_answers import group_id_for, recent_groups, status_answer
from api.groups import BLOCK_ENTRIES
from api.http import fhir_response
from api.tenancy import tenant_of
from api.traces import trace
from worker.errors import BodyTooLarge, InvalidRequest, Issue, UnknownJob, UnsupportedMediaType, operation_outcome
from worker.model.access import Principal, Trace
from worker.model.clock import utc_now
from worker.submission import Taken

router = APIRouter(prefix="/fhir")
MAX_FEED_LINES_READ = 10**9  # `_count` of a results read: any number of lines by default
NDJSON_TYPES = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson")


class _Lines:
    """The numbered lines of an NDJSON stream, as its chunks arrive (a line may span chunks)."""

    def __init__(self, limit: int) -> None:
        self.number, self._pending, self._limit = 0, b"", limit

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > self._limit:
            where = f"line {self.number + len(lines) + 1}"
            raise BodyTooLarge(f"{where.capitalize()} is longer than {self._limit} bytes", where)
        return [self._next(raw) for raw in lines]

    def end(self) -> list[tuple[int, bytes]]:
        return [self._next(self._pending)] if self._pending.strip() else []

    def _next(self, raw: bytes) -> tuple[int, bytes]:
        self.number += 1
        return self.number, raw


async def _blocks(request: Request, limit: int) -> AsyncIterator[list[tuple[int, bytes]]]:
    """Blocks of BLOCK_ENTRIES numbered lines (the last one shorter), read as the body streams in."""
    lines, block = _Lines(limit), []
    async for chunk in request.stream():
        block += lines.feed(chunk)
        if len(block) >= BLOCK_ENTRIES:
            yield block
            block = []
    block += lines.end()
    if block:
        yield block


@router.post("/$bulk-submit")
async def bulk_submit(request: Request, caller: Caller) -> Response:
    """Accept an NDJSON feed, one entry per line, streamed in blocks; 202 with the group's status location.

    One block is accepted (in a thread) while the next is read from the stream, so intake keeps pace with the
    client; blocks are still accepted one after the other, in order."""
    conn = connections(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in NDJSON_TYPES:
        raise UnsupportedMediaType(f"A feed is NDJSON ({', '.join(NDJSON_TYPES)}), not {kind!r}", "Content-Type")
    if dry_run_asked(request):
        return await _dry_feed(request, caller)
    group_id = group_id_for(request.headers.get("idempotency-key"), caller.subject, tenant_of(request))
    await anyio.to_thread.run_sync(conn.database.groups.open, group_id, "feed", utc_now(), None, caller.subject)
    rid, most = trace(request), conn.settings.max_feed_lines
    intake = _Intake(request, group_id, caller, rid)
    try:
        async for block in _blocks(request, conn.settings.max_body_bytes):
            over = block[-1][0] - most
            if over > 0:  # take the lines up to the cap, then say where the feed was cut
                return await _over_cap(request, intake, block[: len(block) - over])
            stopped = await intake.add(block)
            if stopped is not None:
                return stopped
    except BaseException:
        with contextlib.suppress(Exception):  # the block in flight ends before the error is answered
            await intake.finish()
        raise
    stopped = await intake.finish()
    if stopped is not None:
        return stopped
    await anyio.to_thread.run_sync(conn.database.groups.close, group_id, intake.lines, intake.rejected, utc_now())
    return await status_answer(request, group_id, caller)


async def _dry_feed(request: Request, caller: Principal) -> Response:
    """A feed's dry run: every line checked as intake checks it, and planned in line order on what the lines
    before it left (nothing is recorded). The answer is the NDJSON the feed's results would be, at once; a feed
    over FHIR_PATCH_MAX_FEED_LINES is 413, as the real one, and none of it is planned."""
    conn = connections(request)
    session, base, rid = conn.dry_run.session(), fhir_base(request), trace(request)
    most = conn.settings.max_feed_lines
    lines: list[bytes] = []
    async for block in _blocks(request, conn.settings.max_body_bytes):
        if block[-1][0] > most:
            diagnostics = (
                f"A feed holds at most {most} lines (FHIR_PATCH_MAX_FEED_LINES): line {most + 1} and after would not "
                "be taken; send them as another feed"
            )
            outcome = operation_outcome([Issue("too-costly", diagnostics, (f"line {most + 1}",))])
            return fhir_response(outcome, 413, {DRY_RUN: "true", "X-Accepted-Lines": str(most)})
        answers = await anyio.to_thread.run_sync(conn.groups.dry_lines, session, block, caller, base, rid)
        lines += [(json.dumps(answer) + "\n").encode() for answer in answers]
    headers = {DRY_RUN: "true", "X-Dry-Run-Lines": str(len(lines))}
    return Response(b"".join(lines), 200, headers, media_type="application/fhir+ndjson")


class _Intake:
    """The blocks of one feed accepted in order, one in flight while the next is read."""

    def __init__(self, request: Request, group_id: str, caller: Principal, rid: Trace) -> None:
        self._request, self.group_id, self._caller, self._rid = request, group_id, caller, rid
        self._in_flight: asyncio.Task[Taken] | None = None
        self.lines = self.rejected = 0

    async def add(self, block: list[tuple[int, bytes]]) -> Response | None:
        """Start accepting `block` once the previous one is accepted; the answer when backpressure stopped it."""
        stopped = await self.finish()
        if stopped is None:
            conn = connections(self._request)
            accept = conn.groups.accept_lines
            self._in_flight = asyncio.ensure_future(
                anyio.to_thread.run_sync(accept, self.group_id, block, self._caller, self._rid)
            )
            self.lines = block[-1][0]
        return stopped

    async def finish(self) -> Response | None:
        """Wait for the block in flight; the 429/503 answer when backpressure stopped it."""
        if self._in_flight is None:
            return None
        taken, self._in_flight = await self._in_flight, None
        if taken.stopped_at is not None:
            return _stopped(self._request, self.group_id, taken)
        self.rejected += taken.refused
        return None


async def _over_cap(request: Request, intake: _Intake, block: list[tuple[int, bytes]]) -> Response:
    """413 for a feed longer than FHIR_PATCH_MAX_FEED_LINES: the lines up to the cap are taken (the group ends there,
    and is polled as usual), the rest is not; the client sends it as another feed."""
    conn = connections(request)
    most = conn.settings.max_feed_lines
    stopped = await intake.add(block) if block else None
    stopped = stopped or await intake.finish()
    if stopped is not None:
        return stopped
    await anyio.to_thread.run_sync(conn.database.groups.close, intake.group_id, most, intake.rejected, utc_now())
    diagnostics = (
        f"A feed holds at most {most} lines (FHIR_PATCH_MAX_FEED_LINES): lines 1 to {most} were taken, line "
        f"{most + 1} and after were not; send them as another feed"
    )
    headers = {"X-Accepted-Lines": str(most), "Content-Location": f"{fhir_base(request)}/_async/{intake.group_id}"}
    return fhir_response(operation_outcome([Issue("too-costly", diagnostics, (f"line {most + 1}",))]), 413, headers)


def _stopped(request: Request, group_id: str, taken: Taken) -> Response:
    """Backpressure stopped the feed at a line boundary: 429 (or 503) saying how many lines were taken, so the
    client can send the feed again with the same Idempotency-Key (lines already taken are not taken twice)."""
    assert taken.refusal is not None and taken.stopped_at is not None
    accepted = taken.stopped_at - 1
    diagnostics = (
        f"{taken.refusal.diagnostics}. Lines 1 to {accepted} were taken, line {taken.stopped_at} and after were "
        "not; send the feed again with the same Idempotency-Key to continue"
    )
    headers = {
        **dict(getattr(taken.refusal, "headers", {})),
        "X-Accepted-Lines": str(accepted),
        "Content-Location": f"{fhir_base(request)}/_async/{group_id}",
    }
    return fhir_response(
        operation_outcome([Issue(taken.refusal.issues[0].code, diagnostics, (f"line {taken.stopped_at}",))]),
        taken.refusal.status,
        headers,
    )


@router.get("/_async")
async def groups(request: Request, caller: Caller) -> Response:
    """The caller's newest feeds and batches with their progress, newest first: a searchset Bundle of the
    Parameters their polls answer with (the operator page's list)."""
    return fhir_response(await recent_groups(request, caller), 200)


@router.get("/_async/{group_id}/results")
async def results(group_id: str, request: Request, caller: Caller) -> Response:
    """One NDJSON line per entry, in entry order: status, etag, location, outcome (or `pending`), the resource,
    and `refused` (at intake) or `unchanged` (a patch that changed nothing). `?outcome=failed`: only the entries
    that failed, found from the group's notes without reading the others; `_count`: at most that many lines."""
    failed_only = _only_failed(request.query_params.getlist("outcome"))
    most = query_number(request, "_count", MAX_FEED_LINES_READ, 1, MAX_FEED_LINES_READ)
    conn = connections(request)
    group = await anyio.to_thread.run_sync(conn.database.groups.get, group_id)
    if group is None or (group.total is None and not failed_only) or not caller.owns(group.owner):
        raise UnknownJob(f"No finished intake for group {group_id!r}", "group")  # failed lines: from the start
    base = fhir_base(request)

    def lines() -> Iterator[bytes]:
        for line in itertools.islice(conn.groups.result_lines(group, base, failed_only), most):
            yield (json.dumps(line) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/fhir+ndjson")


def _only_failed(asked: list[str]) -> bool:
    if asked not in ([], ["failed"]):
        raise InvalidRequest(f"outcome may be given once, as failed; not {asked!r}", "outcome")
    return bool(asked)
