"""Durable jobs in MongoDB: accept, claim, finish, cancel, expire; idempotency keys; callback outbox.

State changes are single-document updates filtered on the state they leave,
so a claim and a cancel can never both win, and a finished job is never
finished again by a redelivered message.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from worker.jobs import Job, JobResult, JobState


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class JobStore:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._jobs: Collection[dict[str, Any]] = db["jobs"]
        self._keys: Collection[dict[str, Any]] = db["idempotency"]

    def ensure_indexes(self) -> None:
        self._jobs.create_index([("state", 1), ("acceptedAt", 1)], name="state_accepted")
        self._jobs.create_index([("finishedAt", 1)], name="finished")

    def accept(self, job: Job) -> None:
        self._jobs.insert_one(job.to_document())

    def remember_key(self, scope: str, digest: str, job_id: str, now: datetime) -> str:
        """Bind an idempotency key to a job: the job id to answer with (an earlier one on a retry).

        Raises IdempotencyConflict when the key was used for a different request.
        """
        try:
            self._keys.insert_one({"_id": scope, "digest": digest, "job": job_id, "createdAt": now})
            return job_id
        except DuplicateKeyError:
            earlier = self._keys.find_one({"_id": scope})
            if earlier is None:  # expired between the insert and the read: bind it again
                return self.remember_key(scope, digest, job_id, now)
            if earlier["digest"] != digest:
                raise IdempotencyConflict(earlier["job"]) from None
            return str(earlier["job"])

    def forget_key(self, scope: str, job_id: str) -> None:
        self._keys.delete_one({"_id": scope, "job": job_id})

    def get(self, job_id: str) -> Job | None:
        doc = self._jobs.find_one({"_id": job_id})
        return Job.from_document(doc) if doc else None

    def claim(self, job_id: str, now: datetime) -> Job | None:
        """accepted -> running, returning the job in whatever state it is now (None if unknown)."""
        doc = self._jobs.find_one_and_update({"_id": job_id, "state": JobState.ACCEPTED.value},
                                             {"$set": {"state": JobState.RUNNING.value, "startedAt": now}},
                                             return_document=ReturnDocument.AFTER)
        return Job.from_document(doc) if doc else self.get(job_id)

    def finish(self, job_id: str, result: JobResult, now: datetime, extra: dict[str, Any] | None = None) -> bool:
        """Record the outcome of a running job; False if it was already final (a redelivery)."""
        state = JobState.APPLIED if result.succeeded else JobState.FAILED
        done = self._jobs.update_one({"_id": job_id, "state": {"$in": [JobState.ACCEPTED.value, JobState.RUNNING.value]}},
                                     {"$set": {"state": state.value, "finishedAt": now, "result": result.to_document(), **(extra or {})}})
        return done.modified_count == 1

    def cancel(self, job_id: str, now: datetime) -> bool:
        """accepted -> cancelled; False when the job already started or ended."""
        done = self._jobs.update_one({"_id": job_id, "state": JobState.ACCEPTED.value},
                                     {"$set": {"state": JobState.CANCELLED.value, "finishedAt": now}})
        return done.modified_count == 1

    def update(self, job_id: str, fields: dict[str, Any]) -> None:
        self._jobs.update_one({"_id": job_id}, {"$set": fields})

    def unfinished_before(self, before: datetime, limit: int = 10_000) -> Iterator[Job]:
        """Jobs accepted before `before` that have not ended, oldest first (for the reconciler)."""
        cursor = self._jobs.find({"state": {"$in": [JobState.ACCEPTED.value, JobState.RUNNING.value]}, "acceptedAt": {"$lt": before}})
        for doc in cursor.sort("acceptedAt", 1).limit(limit):
            yield Job.from_document(doc)

    def callbacks_due(self, now: datetime, limit: int = 1000) -> Iterator[Job]:
        """Finished jobs whose callback is still owed and due (lost retry messages are found here)."""
        for doc in self._jobs.find({"callback.state": "pending", "callback.nextAttemptAt": {"$lte": now}}).limit(limit):
            yield Job.from_document(doc)

    def expire(self, finished_before: datetime) -> int:
        """Remove finished jobs (and idempotency keys) older than the retention; returns jobs removed."""
        self._keys.delete_many({"createdAt": {"$lt": finished_before}})
        done = self._jobs.delete_many({"finishedAt": {"$lt": finished_before},
                                       "state": {"$in": [JobState.APPLIED.value, JobState.FAILED.value, JobState.CANCELLED.value]}})
        return done.deleted_count
