"""Groups of entries (bulk feeds, batch Bundles): accept a block of entries, report progress and results.

Each valid entry becomes job `G-nnnnnnn` on its resource's queue, in entry
order (so a feed's lines for one resource apply in line order). An entry
refused at intake gets its failed result at once, with the entry named. A
block of entries costs one bulk insert of jobs, one of refusals and one Redis
round trip, whatever its size; the caller streams blocks, so memory stays
bounded by the block, not the feed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from api.conditional import ConditionalResolver
from api.entries import authorize_entry, entry_request, located, target
from api.http import log_refusal_event
from worker.errors import FhirError, InvalidRequest
from worker.model.access import NO_TRACE, Actor, Principal, Trace
from worker.model.changes import fhir_instant
from worker.model.clock import utc_now
from worker.model.groups import Group, entry_job_id
from worker.model.jobs import Job, JobResult, JobState, result_event
from worker.model.results import etag, response_element, version_wanted, written_entry
from worker.model.stores import Stores, failed_outcomes, group_outcomes
from worker.model.tenants import DEFAULT_TENANT
from worker.model.versions import StoredVersion
from worker.patch.fhir_json import loads
from worker.submission import Submitter, Taken
from worker.submission.backends import QueueReadings
from worker.submission.dry_run import DryEnd, DrySession

BLOCK_ENTRIES = 500
Newest = Callable[[str, str], StoredVersion | None]  # (type, id) -> the newest version


@dataclass(frozen=True)
class Progress:
    group: Group
    accepted: int
    rejected: int
    applied: int
    failed: int
    cancelled: int = 0
    unchanged: int = 0  # of the applied: patches that changed nothing

    @property
    def ended(self) -> int:
        return self.rejected + self.applied + self.failed + self.cancelled + len(self.group.reads or {})

    @property
    def done(self) -> bool:
        return self.group.total is not None and self.ended >= self.group.total

    def to_parameters(self, results_url: str) -> dict[str, Any]:
        total = self.group.total
        values: list[tuple[str, Any]] = [
            ("accepted", self.accepted),
            ("rejected", self.rejected),
            ("applied", self.applied),
            ("unchanged", self.unchanged),
            ("failed", self.failed + self.rejected),
            ("cancelled", self.cancelled),
            ("pending", max(0, self.accepted - self.applied - self.failed - self.cancelled)),
        ]
        parameter: list[dict[str, Any]] = [
            {"name": "group", "valueString": self.group.id},
            {"name": "kind", "valueCode": self.group.kind},
            {"name": "created", "valueInstant": fhir_instant(self.group.created_at)},
        ]
        if total is not None:
            parameter.append({"name": "total", "valueInteger": total})
        values.append(("ended", self.ended))  # entries with an answer: every one of them once `done`
        parameter += [{"name": name, "valueInteger": value} for name, value in values]
        parameter.append({"name": "done", "valueBoolean": self.done})
        parameter.append({"name": "results", "valueUrl": results_url})
        return {"resourceType": "Parameters", "parameter": parameter}


class GroupIntake:
    def __init__(
        self,
        database: Stores,
        submitter: Submitter,
        readings: QueueReadings,
        lenient: bool = False,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """`database` is `tenant`'s registry: every entry's job is that community's."""
        self._lenient = lenient
        self._tenant = tenant
        self._db = database
        self._submitter = submitter
        self._readings = readings
        self._conditional = ConditionalResolver(database)

    def accept_lines(
        self, group_id: str, lines: list[tuple[int, bytes]], caller: Principal, trace: Trace = NO_TRACE
    ) -> Taken:
        """A block of NDJSON feed lines. Under backpressure the block is cut at a line boundary (`Taken.stopped_at`)."""
        entries = _parsed_lines(lines)
        return self.accept_entries(group_id, entries, lambda n: f"line {n}", caller, trace, partial=True)

    def dry_lines(
        self, session: DrySession, lines: list[tuple[int, bytes]], caller: Principal, base: str, trace: Trace = NO_TRACE
    ) -> list[dict[str, Any]]:
        """A block of feed lines checked as `accept_lines` checks them, then planned in `session` (nothing is
        recorded): the result lines the feed would give, each with the version it was planned on and the jobs
        queued ahead of it."""
        ends, refused = self.plan_entries(session, _parsed_lines(lines), lambda n: f"line {n}", caller, trace)
        answers = {number: {"line": number, **entry_response(event, base)} for number, event in refused}
        for number, end in ends:
            assert end.job.result is not None
            answers[number] = {
                "line": number,
                **response_element(end.job.result, end.job.key, base),
                "basedOnVersion": end.before.version_id if end.before is not None else None,
                "queuedAhead": end.queued_ahead,
            }
        return [answers[number] for number, _ in lines if number in answers]

    def plan_entries(
        self,
        session: DrySession,
        entries: list[tuple[int, Any]],
        where: Callable[[int], str],
        caller: Principal,
        trace: Trace = NO_TRACE,
    ) -> tuple[list[tuple[int, DryEnd]], list[tuple[int, dict[str, Any]]]]:
        """A dry run of numbered entries (a batch's, a feed block's): each checked as `accept_entries` checks it,
        then planned in entry order in `session`; how each would end, and the refusals found at intake."""
        jobs, refused = self.check_entries(f"dry-{uuid.uuid4().hex}", entries, where, caller, trace, utc_now())
        ends = session.jobs([job for _, job in jobs])
        return [(number, end) for (number, _), end in zip(jobs, ends)], refused

    def accept_entries(
        self,
        group_id: str,
        entries: list[tuple[int, Any]],
        where: Callable[[int], str],
        caller: Principal,
        trace: Trace = NO_TRACE,
        partial: bool = False,
    ) -> Taken:
        """Entries (number, parsed entry or the FhirError already found); each valid one queued in order.
        An entry the caller may not make fails alone, 403 in its own result. Admission control takes all the
        entries or none (`partial` False: raises the 429/503), or the first ones that fit (`partial`: a feed)."""
        now = utc_now()
        jobs, refused = self.check_entries(group_id, entries, where, caller, trace, now)
        return self._submitter.submit_entries(group_id, jobs, refused, caller.client_id, partial)

    def check_entries(
        self,
        group_id: str,
        entries: list[tuple[int, Any]],
        where: Callable[[int], str],
        caller: Principal,
        trace: Trace,
        now: datetime,
    ) -> tuple[list[tuple[int, Job]], list[tuple[int, dict[str, Any]]]]:
        """Each entry as a job (in entry order), or its refusal as a result event: authorized, checked and its
        condition resolved, as intake does it (a real one and a dry run)."""
        jobs: list[tuple[int, Job]] = []
        refused: list[tuple[int, dict[str, Any]]] = []
        for number, entry in entries:
            job_id = entry_job_id(group_id, number)
            try:
                if isinstance(entry, FhirError):
                    raise entry
                authorize_entry(entry, caller, where(number))
                request = entry_request(self.resolved(entry, where(number)), where(number), self._lenient)
                actor = Actor(caller.subject, caller.client_id, caller.grants.on(request.resource_type), trace)
                request = replace(request, actor=actor, tenant=self._tenant)
                jobs.append((number, Job(job_id, request, JobState.ACCEPTED, now)))
            except FhirError as exc:
                if exc.status == 403:
                    log_refusal_event(caller, group_id, where(number), exc)
                refused.append((number, result_event(job_id, JobResult(exc.status, outcome=exc.outcome), now)))
        return jobs, refused

    def resolved(self, entry: Any, where: str) -> Any:
        """The entry with a conditional `request.url` (Type?identifier=...) replaced by the resource it names."""
        request = entry.get("request") if isinstance(entry, dict) else None
        url = request.get("url") if isinstance(request, dict) else None
        if not isinstance(request, dict) or not isinstance(url, str) or "?" not in url:
            return entry
        resource_type, _, query = url.partition("?")
        try:
            resource_id = self._conditional.resolve(target(resource_type)[0], query)
        except FhirError as exc:
            raise located(exc, where) from exc
        return {**entry, "request": {**request, "url": f"{resource_type}/{resource_id}"}}

    def cancel(self, group: Group) -> int:
        """Cancel every entry no worker started; how many were cancelled."""
        return self._db.jobs.cancel_many(
            [
                entry_job_id(group.id, n)
                for n in range(1, (group.total or 0) + 1)
                if not group.reads or n not in group.reads
            ],
            utc_now(),
        )

    def progress(self, group: Group) -> Progress:
        counts = self._readings.group_counts(group.id)
        if not counts and group.total is not None:  # Redis lost the counters: count from MongoDB
            found = count_outcomes(group_outcomes(self._db.groups, self._db.jobs, group))
            return Progress(
                group,
                group.total - group.rejected,
                group.rejected,
                found["applied"],
                found["failed"] - group.rejected,
                found["cancelled"],
                found["unchanged"],
            )
        return Progress(
            group,
            counts.get("accepted", 0),
            counts.get("rejected", 0),
            counts.get("applied", 0),
            counts.get("failed", 0),
            counts.get("cancelled", 0),
            counts.get("unchanged", 0),
        )

    def batch_response(self, group: Group, base: str) -> dict[str, Any]:
        """The batch-response Bundle: one entry per request entry, in order; GET entries read now, after the writes."""
        outcomes = list(group_outcomes(self._db.groups, self._db.jobs, group))
        versions = self._versions([event for _, event in outcomes])
        entries: list[dict[str, Any]] = []
        for number, event in outcomes:
            if group.reads and number in group.reads:
                entries.append(self.read_entry(group.reads[number], base))
            elif event is None or "result" not in event:  # pending, or cancelled before it started
                entries.append({"response": {"status": "202 Accepted" if event is None else "cancelled"}})
            else:
                entries.append(written_entry(event["key"], versions.get(id(event)), entry_response(event, base), base))
        return {"resourceType": "Bundle", "id": group.id, "type": "batch-response", "entry": entries}

    def _versions(self, events: list[dict[str, Any] | None]) -> dict[int, StoredVersion | None]:
        """The versions the written entries answer with, read together (ResourceStore.versions)."""
        written = [
            e
            for e in events
            if e and e.get("key") and (e.get("result") or {}).get("versionId") and int(e["result"]["status"]) < 300
        ]
        wanted = [version_wanted(str(e["key"]), int(e["result"]["versionId"])) for e in written]
        return dict(zip((id(e) for e in written), self._db.resources.versions(wanted)))

    def read_entry(self, url: str, base: str, newest: Newest | None = None) -> dict[str, Any]:
        """The answer entry of a GET entry: the resource's newest version (404/410 otherwise), as stored or as
        `newest` gives it (a dry run's)."""
        try:
            resource_type, resource_id = target(url)
            if resource_id is None:
                raise InvalidRequest("A GET entry reads one resource: Type/id", "request.url")
        except FhirError as exc:
            return {"response": {"status": f"{exc.status}", "outcome": exc.outcome}}
        return _read_entry((newest or self._db.resources.newest)(resource_type, resource_id), base)

    def result_lines(self, group: Group, base: str, failed_only: bool = False) -> Iterator[dict[str, Any]]:
        """One outcome per entry, in entry order (pending entries say so); with `failed_only`, only the entries that
        failed, refused at intake (`refused`) or in a worker, read from the group's notes instead of every result."""
        assert group.total is not None or failed_only  # the failed lines so far may be read while intake runs
        read = failed_outcomes if failed_only else group_outcomes
        for number, event in read(self._db.groups, self._db.jobs, group):
            line = {"line": number, **_result_line(event, base)}
            if not failed_only or _failed(str(line["status"])):  # a noted entry may have succeeded on a retry
                yield line


def _failed(status: str) -> bool:
    code = status.split(" ", 1)[0]
    return code.isdigit() and int(code) >= 400


def _result_line(event: dict[str, Any] | None, base: str) -> dict[str, Any]:
    """An entry's result line: its response element, the resource it was for, and whether it was refused at
    intake or changed nothing; `pending` (or `cancelled`) while it has no result."""
    if not event or "result" not in event:
        return {"status": event["state"] if event else "pending"}
    line = entry_response(event, base)
    if event.get("key"):
        line["resource"] = event["key"]
    if event.get("refused"):
        line["refused"] = True
    elif JobResult.from_document(event["result"]).changed_nothing:
        line["unchanged"] = True
    return line


def count_outcomes(outcomes: Iterator[tuple[int, dict[str, Any] | None]]) -> dict[str, int]:
    """applied / failed / cancelled / pending, counted from stored outcomes (when Redis lost the counters)."""
    counts = {"applied": 0, "failed": 0, "cancelled": 0, "pending": 0, "unchanged": 0}
    for _, outcome in outcomes:
        counts[outcome["state"] if outcome else "pending"] += 1
        if outcome and "result" in outcome and JobResult.from_document(outcome["result"]).changed_nothing:
            counts["unchanged"] += 1
    return counts


def _read_entry(newest: StoredVersion | None, base: str) -> dict[str, Any]:
    if newest is None:
        return {"response": {"status": "404 Not Found"}}
    if newest.deleted:
        return {"response": {"status": "410 Gone", "etag": etag(newest.version_id)}}
    return {
        "fullUrl": f"{base}/{newest.key}",
        "resource": newest.resource(),
        "response": {
            "status": "200 OK",
            "etag": etag(newest.version_id),
            "lastModified": fhir_instant(newest.last_updated),
        },
    }


def entry_response(event: dict[str, Any], base: str) -> dict[str, Any]:
    """Bundle.entry.response (status, etag, lastModified, location, outcome) from a stored result."""
    return response_element(JobResult.from_document(event["result"]), event.get("key"), base)


def _parsed_lines(lines: list[tuple[int, bytes]]) -> list[tuple[int, Any]]:
    entries: list[tuple[int, Any]] = []
    for number, raw in lines:
        try:
            entry = loads(raw, what="entry") if raw.strip() else located(_empty_line(), f"line {number}")
            entries.append((number, entry))
        except FhirError as exc:
            entries.append((number, located(exc, f"line {number}")))
    return entries


def _empty_line() -> FhirError:
    return InvalidRequest("The line is empty; each line must be one entry", "line")
