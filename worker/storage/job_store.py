"""Durable jobs in MongoDB, append-only: accept, start or cancel, finish; idempotency keys.

A job's life is a few inserted documents, never an update (inserts and `_id`
lookups are O(1) on every MongoDB-protocol server; FerretDB scans for updates):

- `jobs`         `_id` J: the accepted request (the durable accept);
- `job_events`   `_id` "J/gate": who got there first, the worker starting
                 it or a client cancelling it; the unique `_id` makes that
                 race have exactly one winner;
                 `_id` "J/result": its outcome; a second finish (a
                 redelivered message) collides and changes nothing;
                 `_id` "J/callback": the callback was delivered or given up.
- `idempotency`  `_id` the Idempotency-Key: the request digest and its job.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo import DeleteOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from worker.jobs import Job, JobResult, JobState


def result_event(job_id: str, key: str, result: JobResult, now: datetime) -> dict[str, Any]:
    state = JobState.APPLIED if result.succeeded else JobState.FAILED
    return {"_id": f"{job_id}/result", "state": state.value, "at": now, "key": key, "result": result.to_document()}


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class JobStore:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._jobs: Collection[dict[str, Any]] = db["jobs"]
        self._events: Collection[dict[str, Any]] = db["job_events"]
        self._keys: Collection[dict[str, Any]] = db["idempotency"]

    def ensure_indexes(self) -> None:
        self._jobs.create_index([("acceptedAt", 1)], name="accepted")
        self._events.create_index([("at", 1)], name="at")

    def accept(self, job: Job) -> None:
        self._jobs.insert_one(job.to_document())

    def accept_many(self, jobs: list[Job]) -> list[Job]:
        """Record jobs; returns those newly recorded (ids already present, from a resubmitted feed, are skipped)."""
        if not jobs:
            return []
        try:
            self._jobs.insert_many([job.to_document() for job in jobs], ordered=False)
            return jobs
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            repeated = {e["index"] for e in errors}
            return [job for i, job in enumerate(jobs) if i not in repeated]

    def forget_many(self, job_ids: list[str]) -> None:
        """Un-record jobs that were recorded but never queued (refused by backpressure right after recording)."""
        if job_ids:
            self._jobs.bulk_write([DeleteOne({"_id": job_id}) for job_id in job_ids], ordered=False)

    def remember_key(self, key: str, digest: str, job_id: str, now: datetime) -> str:
        """Bind an idempotency key to a job: the job id to answer with (an earlier one on a retry).

        Raises IdempotencyConflict when the key was used for a different request.
        """
        try:
            self._keys.insert_one({"_id": key, "digest": digest, "job": job_id, "createdAt": now})
            return job_id
        except DuplicateKeyError:
            earlier = self._keys.find_one({"_id": key})
            if earlier is None:  # expired between the insert and the read: bind it again
                return self.remember_key(key, digest, job_id, now)
            if earlier["digest"] != digest:
                raise IdempotencyConflict(earlier["job"]) from None
            return str(earlier["job"])

    def forget_key(self, key: str, job_id: str) -> None:
        self._keys.delete_one({"_id": key, "job": job_id})

    def get(self, job_id: str) -> Job | None:
        """The job with its current state (accepted, cancelled, applied or failed)."""
        doc = self._jobs.find_one({"_id": job_id})
        if doc is None:
            return None
        result = self._events.find_one({"_id": f"{job_id}/result"})
        if result is not None:
            doc.update(state=result["state"], finishedAt=result["at"], result=result["result"])
        else:
            gate = self._events.find_one({"_id": f"{job_id}/gate"})
            if gate is not None:
                doc.update(state=JobState.CANCELLED.value if gate["by"] == "cancel" else JobState.RUNNING.value, startedAt=gate["at"])
        return Job.from_document(doc)

    def _pass_gate(self, job_id: str, by: str, now: datetime) -> str:
        """Who passed the job's gate first: `by` if this call did, else the earlier one."""
        try:
            self._events.insert_one({"_id": f"{job_id}/gate", "by": by, "at": now})
            return by
        except DuplicateKeyError:
            gate = self._events.find_one({"_id": f"{job_id}/gate"})
            return str(gate["by"]) if gate else by

    def accepted(self, job_id: str) -> Job | None:
        """The job as accepted (one lookup; its state is not read: `start` decides that)."""
        doc = self._jobs.find_one({"_id": job_id})
        return Job.from_document(doc) if doc else None

    def start(self, job_id: str, now: datetime) -> str:
        """"first": this worker starts the job; "again": it was started before (a redelivery); "cancelled"."""
        try:
            self._events.insert_one({"_id": f"{job_id}/gate", "by": "start", "at": now})
            return "first"
        except DuplicateKeyError:
            gate = self._events.find_one({"_id": f"{job_id}/gate"})
            return "cancelled" if gate and gate["by"] == "cancel" else "again"

    def start_many(self, job_ids: list[str], now: datetime) -> list[str]:
        """`start` for several jobs in one round trip (the answer for each, in order)."""
        try:
            self._events.insert_many([{"_id": f"{j}/gate", "by": "start", "at": now} for j in job_ids], ordered=False)
            return ["first"] * len(job_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            repeated = {e["index"] for e in errors}
        answers = []
        for index, job_id in enumerate(job_ids):
            if index not in repeated:
                answers.append("first")
            else:
                gate = self._events.find_one({"_id": f"{job_id}/gate"})
                answers.append("cancelled" if gate and gate["by"] == "cancel" else "again")
        return answers

    def cancel_many(self, job_ids: list[str], now: datetime) -> int:
        """Cancel every job of `job_ids` no worker started (one round trip); how many were cancelled now."""
        if not job_ids:
            return 0
        try:
            self._events.insert_many([{"_id": f"{j}/gate", "by": "cancel", "at": now} for j in job_ids], ordered=False)
            return len(job_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            return len(job_ids) - len(errors)

    def cancel(self, job_id: str, now: datetime) -> bool:
        """Cancel a job no worker started (True, also when it was cancelled already); False once started."""
        return self._pass_gate(job_id, "cancel", now) == "cancel"

    def finish_many(self, events: list[dict[str, Any]]) -> set[str]:
        """Record several outcomes (`result_event`s) in one round trip; the job ids recorded now (repeats change nothing)."""
        if not events:
            return set()
        repeated: set[int] = set()
        try:
            self._events.insert_many(events, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            repeated = {e["index"] for e in errors}
        return {str(e["_id"]).rsplit("/", 1)[0] for i, e in enumerate(events) if i not in repeated}

    def callback_ended(self, job_id: str, state: str, attempts: int, status: int | None, now: datetime) -> None:
        try:
            self._events.insert_one({"_id": f"{job_id}/callback", "state": state, "attempts": attempts, "lastStatus": status, "at": now})
        except DuplicateKeyError:
            pass  # two deliveries raced; the first record stands

    def callback_state(self, job_id: str) -> str:
        doc = self._events.find_one({"_id": f"{job_id}/callback"})
        return str(doc["state"]) if doc else "pending"

    def unfinished_before(self, before: datetime) -> Iterator[Job]:
        """Jobs accepted before `before` with no recorded outcome and not cancelled, oldest first (reconciler)."""
        ended = {str(doc["_id"]).rsplit("/", 1)[0] for doc in self._events.find({"at": {"$lt": before}}, {"_id": 1})
                 if not str(doc["_id"]).endswith("/callback")}
        for doc in self._jobs.find({"acceptedAt": {"$lt": before}}, {"_id": 1}).sort("acceptedAt", 1):
            if doc["_id"] not in ended:
                job = self.get(doc["_id"])
                if job is not None and not job.state.final:
                    yield job

    def callbacks_owed(self, finished_before: datetime) -> Iterator[str]:
        """Jobs finished before `finished_before` whose callback was neither delivered nor given up."""
        for doc in self._jobs.find({"callbackUrl": {"$ne": None}}, {"_id": 1}):
            job_id = str(doc["_id"])
            result = self._events.find_one({"_id": f"{job_id}/result"})
            if result is not None and result["at"] < finished_before and self.callback_state(job_id) == "pending":
                yield job_id

    def expire(self, before: datetime) -> int:
        """Remove jobs that ended (finished or cancelled) before `before`, with their events and idempotency keys."""
        # Entries of a group ("G-n") expire with their group (GroupStore.expire), never one by one.
        ended = [str(doc["_id"]).rsplit("/", 1)[0] for doc in self._events.find({"at": {"$lt": before}}, {"_id": 1, "by": 1})
                 if (str(doc["_id"]).endswith("/result") or doc.get("by") == "cancel") and "-" not in str(doc["_id"])]
        if not ended:
            return 0
        self._events.delete_many({"_id": {"$in": [f"{j}/{kind}" for j in ended for kind in ("gate", "result", "callback")]}})
        self._keys.delete_many({"job": {"$in": ended}})
        return self._jobs.delete_many({"_id": {"$in": ended}}).deleted_count
