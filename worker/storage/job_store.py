"""Durable jobs in MongoDB, by key only: accept, start or cancel, finish; idempotency keys; callbacks owed; expiry.

A job's life is a few documents, each addressed by its `_id`:

- `jobs`         `_id` J: the accepted request (the durable accept). Deleted when
                 the job's outcome is recorded, so this collection holds exactly
                 the jobs in flight: the reconciler may scan it (bounded).
- `job_events`   `_id` "J/gate": who got there first, the worker starting it or a
                 client cancelling it; the unique `_id` gives that race one winner;
                 `_id` "J/result": its outcome, with a summary of the job (the
                 request without its body), so a finished job stays pollable after
                 its `jobs` document is gone; a second finish collides and changes
                 nothing; `_id` "J/callback": the callback was delivered or given up.
- `callbacks`    `_id` J: a callback is owed (bounded: deleted when it ends).
- `idempotency`  `_id` the Idempotency-Key: the request digest and its job.
- `job_expiry`   the jobs that finished in each time slot (worker/storage/expiry.py):
                 the reconciler removes each job's documents by `_id` once the
                 retention passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from worker.edges import translating
from worker.model.jobs import Job, JobState, Start
from worker.storage import keyed
from worker.storage.expiry import ExpirySlots


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def _is_group_entry(job_id: str) -> bool:
    return "-" in job_id  # entries "G-n" expire with their group (GroupStore.expire), never one by one


@translating(PyMongoError, "MongoDB")
class JobStore:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._jobs: Collection[dict[str, Any]] = db["jobs"]
        self._events: Collection[dict[str, Any]] = db["job_events"]
        self._keys: Collection[dict[str, Any]] = db["idempotency"]
        self._callbacks: Collection[dict[str, Any]] = db["callbacks"]
        self._expiry = ExpirySlots(db["job_expiry"])

    def ensure_indexes(self) -> None:
        """Only on the bounded collection the reconciler scans: jobs in flight, oldest first."""
        self._jobs.create_index([("acceptedAt", 1)], name="accepted")

    def accept(self, job: Job) -> None:
        """Record a job; recording the same job id again changes nothing (a retry may record the job of a request
        that died after binding its Idempotency-Key, while that request, if only slow, records it too)."""
        keyed.insert_one_new(self._jobs, job.to_document())

    def accept_many(self, jobs: list[Job]) -> list[Job]:
        """Record jobs; returns those newly recorded (ids already present, from a resubmitted feed, are skipped)."""
        repeated = keyed.insert_new(self._jobs, [job.to_document() for job in jobs])
        return [job for i, job in enumerate(jobs) if i not in repeated]

    def forget_many(self, job_ids: list[str]) -> None:
        """Un-record jobs that were recorded but never queued (refused by backpressure right after recording)."""
        keyed.delete_many(self._jobs, job_ids)

    def remember_key(self, key: str, digest: str, job_id: str, now: datetime) -> str:
        """Bind an idempotency key to a job: the job id to answer with (an earlier one on a retry).

        Raises IdempotencyConflict when the key was used for a different request.
        """
        if keyed.insert_one_new(self._keys, {"_id": key, "digest": digest, "job": job_id, "createdAt": now}):
            return job_id
        earlier = keyed.get(self._keys, key)
        if earlier is None:  # expired between the insert and the read: bind it again
            return self.remember_key(key, digest, job_id, now)
        if earlier["digest"] != digest:
            raise IdempotencyConflict(earlier["job"])
        return str(earlier["job"])

    def forget_key(self, key: str, job_id: str) -> None:
        doc = keyed.get(self._keys, key)
        if doc is not None and doc.get("job") == job_id:
            keyed.delete_many(self._keys, [key])

    def get(self, job_id: str) -> Job | None:
        """The job with its current state (accepted, running, applied or failed); None when unknown, expired
        or cancelled before it started."""
        result = keyed.get(self._events, f"{job_id}/result")
        if result is not None and "job" in result:
            return Job.from_document(
                {**result["job"], "state": result["state"], "finishedAt": result["at"], "result": result["result"]}
            )
        doc = keyed.get(self._jobs, job_id)
        if doc is None:
            return None
        if result is not None:
            doc.update(state=result["state"], finishedAt=result["at"], result=result["result"])
        else:
            gate = keyed.get(self._events, f"{job_id}/gate")
            if gate is not None:
                doc.update(
                    state=JobState.CANCELLED.value if gate["by"] == "cancel" else JobState.RUNNING.value,
                    startedAt=gate["at"],
                )
        return Job.from_document(doc)

    def accepted(self, job_id: str) -> Job | None:
        """The job as accepted (one lookup; its state is not read: `start` decides that)."""
        doc = keyed.get(self._jobs, job_id)
        return Job.from_document(doc) if doc else None

    def start(self, job_id: str, now: datetime) -> Start:
        """Start the job: Start.FIRST for the one winner, AGAIN for a redelivery, CANCELLED."""
        return self.start_many([job_id], now)[0]

    def start_many(self, job_ids: list[str], now: datetime) -> list[Start]:
        """`start` for several jobs in one round trip (the answer for each, in order)."""
        repeated = keyed.insert_new(self._events, [{"_id": f"{j}/gate", "by": "start", "at": now} for j in job_ids])
        answers = []
        for index, job_id in enumerate(job_ids):
            if index not in repeated:
                answers.append(Start.FIRST)
            else:
                gate = keyed.get(self._events, f"{job_id}/gate")
                answers.append(Start.CANCELLED if gate and gate["by"] == "cancel" else Start.AGAIN)
        return answers

    def cancel_many(self, job_ids: list[str], now: datetime) -> int:
        """Cancel every job of `job_ids` no worker started (one round trip); how many were cancelled now."""
        return len(job_ids) - len(
            keyed.insert_new(self._events, [{"_id": f"{j}/gate", "by": "cancel", "at": now} for j in job_ids])
        )

    def cancel(self, job_id: str, now: datetime) -> bool:
        """Cancel a job no worker started (True, also when it was cancelled already); False once started."""
        if keyed.insert_one_new(self._events, {"_id": f"{job_id}/gate", "by": "cancel", "at": now}):
            return True
        gate = keyed.get(self._events, f"{job_id}/gate")
        return bool(gate and gate["by"] == "cancel")

    def finish_many(self, events: list[dict[str, Any]]) -> set[str]:
        """`record_outcomes`, then `retire` the jobs at once; the job ids recorded now."""
        recorded = self.record_outcomes(events)
        if events:
            self.retire([str(e["_id"]).rsplit("/", 1)[0] for e in events], events[0]["at"])
        return recorded

    def record_outcomes(self, events: list[dict[str, Any]]) -> set[str]:
        """Record several outcomes (`result_event`s) and note the callbacks owed; the job ids recorded now (repeats
        change nothing). The jobs stay in flight until they are retired."""
        try:
            repeated = keyed.insert_new(self._events, events)
        except UnicodeEncodeError:  # a lone surrogate in an outcome: store it, with the character replaced
            events = [keyed.storable(e) for e in events]
            repeated = keyed.insert_new(self._events, events)
        job_ids = [str(e["_id"]).rsplit("/", 1)[0] for e in events]
        owed = [{"_id": j, "at": e["at"]} for j, e in zip(job_ids, events) if (e.get("job") or {}).get("callbackUrl")]
        keyed.insert_new(self._callbacks, owed)
        return {j for i, j in enumerate(job_ids) if i not in repeated}

    def retire(self, job_ids: list[str], now: datetime) -> None:
        """Finished jobs leave the in-flight collection, having joined the expiry slot of `now` first: a crash in
        between leaves a finished job in flight, which the reconciler retires again (never one that expires
        nowhere)."""
        self._expiry.add([j for j in job_ids if not _is_group_entry(j)], now)
        self.left(job_ids)

    def withdraw_many(self, job_ids: list[str], now: datetime) -> None:
        """Jobs recorded but not queued (Redis failed them): cancelled and out of flight, so nothing applies them
        later; the client was told they were not accepted."""
        self.cancel_many(job_ids, now)
        self.left(job_ids)

    def left(self, job_ids: list[str]) -> None:
        """The jobs are no longer in flight (finished, or cancelled and taken off their queue)."""
        keyed.delete_many(self._jobs, job_ids)

    def cancelled_left(self, job_ids: list[str], now: datetime) -> None:
        """Cancelled jobs taken off their queue: no longer in flight, and their gate expires like a result."""
        self.left(job_ids)
        self._expiry.add([j for j in job_ids if not _is_group_entry(j)], now)

    def callback_ended(self, job_id: str, state: str, attempts: int, status: int | None, now: datetime) -> None:
        keyed.insert_new(
            self._events,
            [{"_id": f"{job_id}/callback", "state": state, "attempts": attempts, "lastStatus": status, "at": now}],
        )  # two deliveries raced: the first record stands
        keyed.delete_many(self._callbacks, [job_id])

    def callback_state(self, job_id: str) -> str:
        doc = keyed.get(self._events, f"{job_id}/callback")
        return str(doc["state"]) if doc else "pending"

    def in_flight_before(self, before: datetime) -> Iterator[str]:
        """Ids of the jobs in flight accepted before `before`, oldest first (a scan of the bounded collection)."""
        for doc in keyed.scan(self._jobs, {"acceptedAt": {"$lt": before}}, {"_id": 1}, sort=[("acceptedAt", 1)]):
            yield str(doc["_id"])

    def unfinished_before(self, before: datetime) -> Iterator[Job]:
        """Jobs accepted before `before` with no recorded outcome and not cancelled, oldest first (reconciler).
        A scan, on the bounded collection of jobs in flight."""
        for doc in keyed.scan(self._jobs, {"acceptedAt": {"$lt": before}}, {"_id": 1}, sort=[("acceptedAt", 1)]):
            job = self.get(str(doc["_id"]))
            if job is None:
                continue
            if job.state.final:  # its outcome was recorded just before a crash: only the clean-up was left
                self.retire([job.id], job.finished_at or before)
            else:
                yield job

    def committed(self, transaction: str) -> bool:
        """Did the transaction reach its commit point (its result recorded as applied)?"""
        result = keyed.get(self._events, f"{transaction}/result")
        return bool(result and result.get("state") == "applied")

    def outcomes(self, job_ids: list[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """(job id, its result event, {"state": "cancelled"}, or None while pending), in order: a result lookup by
        `_id` per job, and a gate lookup only for a job without a result."""
        for job_id in job_ids:
            result = keyed.get(self._events, f"{job_id}/result")
            if result is None:
                gate = keyed.get(self._events, f"{job_id}/gate")
                result = {"state": "cancelled"} if gate is not None and gate.get("by") == "cancel" else None
            yield job_id, result

    def callbacks_owed(self, finished_before: datetime) -> Iterator[str]:
        """Jobs finished before `finished_before` whose callback was neither delivered nor given up (a scan of the
        bounded collection of callbacks owed)."""
        for doc in keyed.scan(self._callbacks, {"at": {"$lt": finished_before}}, {"_id": 1}):
            yield str(doc["_id"])

    def expire(self, before: datetime) -> int:
        """Remove jobs that finished before `before`, with their events and idempotency keys (by expiry slot)."""
        return sum(self.remove(job_ids) for job_ids in self._expiry.due(before))

    def remove(self, job_ids: list[str]) -> int:
        """Forget finished jobs: their events and idempotency keys (a group's entries go when the group expires)."""
        keys = [
            str((r.get("job") or {}).get("idempotencyKey"))
            for _, r in keyed.get_many(self._events, [f"{j}/result" for j in job_ids])
            if r is not None and (r.get("job") or {}).get("idempotencyKey")
        ]
        keyed.delete_many(self._keys, keys)
        keyed.delete_many(self._events, [f"{j}/{kind}" for j in job_ids for kind in ("result", "gate", "callback")])
        return len(job_ids)
