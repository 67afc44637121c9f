"""In-memory doubles of the stores, for unit tests of the service logic in milliseconds.

They are held to the same contract suites as the MongoDB stores
(tests/storage/test_*_contract.py run against both).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

from worker.model.groups import Group, refusal_block
from worker.model.jobs import Job, JobState, Start
from worker.model.versions import StoredVersion
from worker.storage import IdempotencyConflict, VersionConflict


class MemoryJobs:
    def __init__(self) -> None:
        self.in_flight: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.owed: dict[str, datetime] = {}
        self.finished_at: dict[str, datetime] = {}

    def ensure_indexes(self) -> None:
        pass

    def accept(self, job: Job) -> None:
        self.in_flight.setdefault(job.id, job.to_document())

    def accept_many(self, jobs: list[Job]) -> list[Job]:
        new = [job for job in jobs if job.id not in self.in_flight]
        for job in new:
            self.in_flight[job.id] = job.to_document()
        return new

    def forget_many(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.in_flight.pop(job_id, None)

    def withdraw_many(self, job_ids: list[str], now: datetime) -> None:
        self.cancel_many(job_ids, now)
        self.forget_many(job_ids)

    def remember_key(self, key: str, digest: str, job_id: str, now: datetime) -> str:
        earlier = self.keys.setdefault(key, {"digest": digest, "job": job_id})
        if earlier["digest"] != digest:
            raise IdempotencyConflict(earlier["job"])
        return str(earlier["job"])

    def forget_key(self, key: str, job_id: str) -> None:
        if self.keys.get(key, {}).get("job") == job_id:
            del self.keys[key]

    def get(self, job_id: str) -> Job | None:
        result = self.events.get(f"{job_id}/result")
        if result is not None and "job" in result:
            return Job.from_document(
                {**result["job"], "state": result["state"], "finishedAt": result["at"], "result": result["result"]}
            )
        doc = self.in_flight.get(job_id)
        if doc is None:
            return None
        gate = self.events.get(f"{job_id}/gate")
        if gate is not None:
            state = JobState.CANCELLED if gate["by"] == "cancel" else JobState.RUNNING
            return replace(Job.from_document(doc), state=state, started_at=gate["at"])
        return Job.from_document(doc)

    def accepted(self, job_id: str) -> Job | None:
        doc = self.in_flight.get(job_id)
        return Job.from_document(doc) if doc else None

    def start(self, job_id: str, now: datetime) -> Start:
        return self.start_many([job_id], now)[0]

    def start_many(self, job_ids: list[str], now: datetime) -> list[Start]:
        answers = []
        for job_id in job_ids:
            gate = self.events.setdefault(f"{job_id}/gate", {"by": "start", "at": now, "new": True})
            if gate.pop("new", False):
                answers.append(Start.FIRST)
            else:
                answers.append(Start.CANCELLED if gate["by"] == "cancel" else Start.AGAIN)
        return answers

    def cancel(self, job_id: str, now: datetime) -> bool:
        gate = self.events.setdefault(f"{job_id}/gate", {"by": "cancel", "at": now})
        return bool(gate["by"] == "cancel")

    def cancel_many(self, job_ids: list[str], now: datetime) -> int:
        fresh = [j for j in job_ids if f"{j}/gate" not in self.events]
        for job_id in fresh:
            self.events[f"{job_id}/gate"] = {"by": "cancel", "at": now}
        return len(fresh)

    def finish_many(self, events: list[dict[str, Any]]) -> set[str]:
        recorded = self.record_outcomes(events)
        if events:
            self.retire([str(e["_id"]).rsplit("/", 1)[0] for e in events], events[0]["at"])
        return recorded

    def record_outcomes(self, events: list[dict[str, Any]]) -> set[str]:
        recorded = set()
        for event in events:
            job_id = str(event["_id"]).rsplit("/", 1)[0]
            if event["_id"] not in self.events:
                self.events[event["_id"]] = event
                recorded.add(job_id)
                if (event.get("job") or {}).get("callbackUrl"):
                    self.owed.setdefault(job_id, event["at"])
        return recorded

    def retire(self, job_ids: list[str], now: datetime) -> None:
        for job_id in job_ids:
            if "-" not in job_id:
                self.finished_at.setdefault(job_id, now)
            self.in_flight.pop(job_id, None)

    def cancelled_left(self, job_ids: list[str], now: datetime) -> None:
        for job_id in job_ids:
            self.in_flight.pop(job_id, None)
            self.finished_at[job_id] = now

    def committed(self, transaction: str) -> bool:
        return self.events.get(f"{transaction}/result", {}).get("state") == "applied"

    def outcomes(self, job_ids: list[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        for job_id in job_ids:
            result = self.events.get(f"{job_id}/result")
            if result is None and self.events.get(f"{job_id}/gate", {}).get("by") == "cancel":
                result = {"state": "cancelled"}
            yield job_id, result

    def unfinished_before(self, before: datetime) -> Iterator[Job]:
        for job_id in list(self.in_flight_before(before)):
            job = self.get(job_id)
            if job is not None and job.state.final:
                self.retire([job.id], job.finished_at or before)
            elif job is not None:
                yield job

    def in_flight_before(self, before: datetime) -> Iterator[str]:
        docs = sorted(self.in_flight.values(), key=lambda doc: doc["acceptedAt"])
        return iter([str(doc["_id"]) for doc in docs if doc["acceptedAt"] < before])

    def callback_ended(self, job_id: str, state: str, attempts: int, status: int | None, now: datetime) -> None:
        self.events.setdefault(f"{job_id}/callback", {"state": state, "attempts": attempts, "lastStatus": status})
        self.owed.pop(job_id, None)

    def callback_state(self, job_id: str) -> str:
        return str(self.events.get(f"{job_id}/callback", {}).get("state", "pending"))

    def callbacks_owed(self, finished_before: datetime) -> Iterator[str]:
        return iter([job_id for job_id, at in self.owed.items() if at < finished_before])

    def expire(self, before: datetime) -> int:
        due = [job_id for job_id, at in self.finished_at.items() if at < before]
        for job_id in due:
            del self.finished_at[job_id]
        return self.remove(due)

    def remove(self, job_ids: list[str]) -> int:
        for job_id in job_ids:
            key = ((self.events.get(f"{job_id}/result") or {}).get("job") or {}).get("idempotencyKey")
            self.keys.pop(str(key), None)
            for kind in ("result", "gate", "callback"):
                self.events.pop(f"{job_id}/{kind}", None)
        return len(job_ids)


class MemoryResources:
    def __init__(self, committed: Callable[[str], bool]) -> None:
        self.stored: dict[str, StoredVersion] = {}
        self._committed = committed

    def ensure_indexes(self) -> None:
        pass

    def version(self, resource_type: str, resource_id: str, version_id: int) -> StoredVersion | None:
        found = self.stored.get(f"{resource_type}/{resource_id}/{version_id}")
        if found is None or (found.transaction and not self._committed(found.transaction)):
            return None
        return found

    def newest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return self.latest(resource_type, resource_id)

    def peek_newest(self, keys: list[str]) -> list[StoredVersion | None]:
        return [self.latest(*key.split("/", 1)) for key in keys]

    def uncopied(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return self.latest(resource_type, resource_id)

    def latest(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        newest = None
        for n in itertools.count(1):
            version = self.version(resource_type, resource_id, n)
            if version is None:
                return newest
            newest = version
        return None  # pragma: no cover (count never ends)

    def versions(self, wanted: list[tuple[str, str, int]]) -> list[StoredVersion | None]:
        return [self.version(*w) for w in wanted]

    def history(
        self, resource_type: str, resource_id: str, count: int, offset: int = 0
    ) -> tuple[int, list[StoredVersion]]:
        newest = self.latest(resource_type, resource_id)
        if newest is None:
            return 0, []
        top = newest.version_id - offset
        page = [self.version(resource_type, resource_id, n) for n in range(top, max(0, top - count), -1)]
        return newest.version_id, [v for v in page if v is not None]

    def written_by(self, job_id: str, resource_type: str, resource_id: str) -> StoredVersion | None:
        newest = self.latest(resource_type, resource_id)
        for n in range(newest.version_id if newest else 0, 0, -1):
            version = self.version(resource_type, resource_id, n)
            if version is not None and version.job_id == job_id:
                return version
        return None

    def commit(self, new: StoredVersion) -> None:
        if self.commit_many([new]) == 0:
            raise VersionConflict(f"{new.key} version {new.version_id} exists", self.latest(*new.key.split("/", 1)))

    def commit_many(self, versions: list[StoredVersion]) -> int:
        for written, version in enumerate(versions):
            key = f"{version.key}/{version.version_id}"
            if key in self.stored:
                return written
            self.stored[key] = version
        return len(versions)

    def commit_each(self, versions: list[StoredVersion]) -> set[int]:
        return {i for i, version in enumerate(versions) if self.commit_many([version]) == 0}

    def remove_uncommitted(self, transaction: str, candidates: list[tuple[str, str, int]]) -> int:
        if self._committed(transaction):
            return 0
        marked = [f"{t}/{i}/{v}" for t, i, v in candidates]
        marked = [k for k in marked if k in self.stored and self.stored[k].transaction == transaction]
        for key in marked:
            del self.stored[key]
        return len(marked)


class MemoryGroups:
    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.blocks: dict[str, dict[int, dict[str, Any]]] = {}
        self.ended: dict[str, datetime] = {}
        self.failed: dict[str, set[int]] = {}

    def open(
        self, group_id: str, kind: str, now: datetime, reads: dict[int, str] | None = None, owner: str | None = None
    ) -> bool:
        if group_id in self.groups:
            return False
        self.groups[group_id] = Group(group_id, kind, now, None, 0, dict(reads or {}), owner)
        return True

    def discard(self, group_id: str) -> None:
        self.groups.pop(group_id, None)

    def close(self, group_id: str, total: int, rejected: int, now: datetime) -> None:
        group = self.groups[group_id]
        if group.total is None:
            self.groups[group_id] = replace(group, total=total, rejected=rejected)

    def refuse(self, group_id: str, refusals: list[tuple[int, int, dict[str, Any] | None]], now: datetime) -> None:
        if not refusals:
            return
        block = refusal_block(group_id, refusals[0][0])
        entries = {n: {"state": "failed", "key": "", "result": {"status": s, "outcome": o}} for n, s, o in refusals}
        self.blocks.setdefault(block, entries)
        group = self.groups[group_id]
        if block not in group.refusal_blocks:
            self.groups[group_id] = replace(group, refusal_blocks=(*group.refusal_blocks, block))

    def refusals(self, group: Group) -> dict[int, dict[str, Any]]:
        return {n: e for block in group.refusal_blocks for n, e in self.blocks.get(block, {}).items()}

    def get(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def recent(self, owner: str) -> list[str]:
        owned = [g for g in self.groups.values() if g.owner == owner]
        return [g.id for g in sorted(owned, key=lambda g: g.created_at, reverse=True)][:20]

    def note_failures(self, failures: dict[str, list[int]]) -> None:
        for group_id, numbers in failures.items():
            self.failed.setdefault(group_id, set()).update(numbers)

    def failures(self, group: Group) -> list[int]:
        return sorted(self.failed.get(group.id, set()))

    def expire(self, before: datetime, now: datetime, has_ended: Callable[[Group], bool]) -> Iterator[Group]:
        for group in list(self.groups.values()):
            if group.id not in self.ended and has_ended(group):
                self.ended[group.id] = now
        for group_id, at in list(self.ended.items()):
            if at < before and group_id in self.groups:
                group = self.groups.pop(group_id)
                for block in group.refusal_blocks:
                    self.blocks.pop(block, None)
                del self.ended[group_id]
                yield group


class MemoryIdentifiers:
    def __init__(self) -> None:
        self.index: dict[tuple[str, str, str], list[str]] = {}

    def add(self, entries: list[tuple[str, str, str, str]]) -> None:
        for resource_type, system, value, resource_id in entries:
            ids = self.index.setdefault((resource_type, system, value), [])
            if resource_id not in ids:
                ids.append(resource_id)

    def candidates(self, resource_type: str, system: str | None, value: str) -> list[str]:
        if system is not None:
            return list(self.index.get((resource_type, system, value), []))
        found = [ids for (t, _, v), ids in sorted(self.index.items()) if t == resource_type and v == value]
        return sorted({i for ids in found for i in ids})

    def with_system(self, resource_type: str, system: str, start_bucket: int = 0) -> Iterator[tuple[int, list[str]]]:
        ids = [i for (t, s, _), found in self.index.items() if (t, s) == (resource_type, system) for i in found]
        return iter([(0, sorted(set(ids)))] if start_bucket == 0 else [])


class MemoryStores:
    """Every store, in memory."""

    def __init__(self) -> None:
        self.jobs = MemoryJobs()
        self.resources = MemoryResources(self.jobs.committed)
        self.groups = MemoryGroups()
        self.identifiers = MemoryIdentifiers()

    def ensure_indexes(self) -> None:
        pass

    def close(self) -> None:
        pass
