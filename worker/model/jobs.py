"""The job: one accepted change to one resource, and the states it moves through.

    accepted --claim--> running --> applied | failed
        \\--cancel--> cancelled

A job is recorded in MongoDB before anything is queued (the durable accept)
and its outcome is recorded there before its message is acknowledged; the
job document is the truth that polling, callbacks and redelivery read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any

from worker.errors import Issue, operation_outcome
from worker.model.access import Actor
from worker.model.tenants import DEFAULT_TENANT, queue_key
from worker.patch import ParsedPatch


class JobState(str, Enum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    APPLIED = "applied"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.APPLIED, JobState.FAILED, JobState.CANCELLED)


class Action(str, Enum):
    """What a job does to its resource; the service has one handler per action."""

    PATCH = "patch"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    TRANSACTION = "transaction"  # a transaction Bundle: its entries are in the body (worker.model.transactions)


# How the outcome of a patch that changed nothing begins (worker/model/changes.py): such a job is applied, and
# the schedule counts it as unchanged too (a feed's no-ops).
CHANGED_NOTHING = "The patch changed nothing"

REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def resource_key(resource_type: str, resource_id: str) -> str:
    """The ordering key: every change to one resource goes through this key's queue."""
    return f"{resource_type}/{resource_id}"


def body_digest(*parts: bytes | str) -> str:
    """Fingerprint of a request, to tell an idempotent retry from a different request."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


class Start(str, Enum):
    """What starting a job found (JobStore.start): the gate is an insert, so exactly one start is FIRST."""

    FIRST = "first"  # this worker starts it
    AGAIN = "again"  # it was started before: a redelivery after a crash (it may have ended, or written its version)
    CANCELLED = "cancelled"  # cancelled before any worker started it


@dataclass(frozen=True)
class JobRequest:
    """Everything needed to apply the job, checked by the API before it was accepted."""

    action: Action
    resource_type: str
    resource_id: str
    body: bytes = b""
    content_type: str = ""
    if_match: int | None = None
    snapshot_mode: tuple[str, ...] = ()
    strict: bool = False
    actor: Actor | None = None  # who asked (None only for requests made before authentication existed)
    warnings: dict[str, Any] | None = None  # an OperationOutcome of warnings found at intake (lenient store validation)
    tenant: str = DEFAULT_TENANT  # the community whose registry holds the resource (worker/model/tenants.py)
    # The patch as the API parsed it to check the request, so that a request the API applies itself is parsed
    # once (worker/submission/direct.py); never stored or queued: a worker parses the body it is given.
    parsed: ParsedPatch | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return resource_key(self.resource_type, self.resource_id)

    @property
    def queue_key(self) -> str:
        """The key of the resource's queue: its tenant and `Type/id`."""
        return queue_key(self.tenant, self.key)

    def to_document(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "type": self.resource_type,
            "id": self.resource_id,
            "body": self.body,
            "contentType": self.content_type,
            "ifMatch": self.if_match,
            "snapshotMode": list(self.snapshot_mode),
            "strict": self.strict,
            "actor": self.actor.to_document() if self.actor else None,
            **({"warnings": self.warnings} if self.warnings else {}),
            **({"tenant": self.tenant} if self.tenant != DEFAULT_TENANT else {}),
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> JobRequest:
        return cls(
            Action(doc["action"]),
            doc["type"],
            doc["id"],
            bytes(doc.get("body") or b""),
            doc.get("contentType", ""),
            doc.get("ifMatch"),
            tuple(doc.get("snapshotMode") or ()),
            bool(doc.get("strict")),
            Actor.from_document(doc.get("actor")),
            doc.get("warnings"),
            str(doc.get("tenant") or DEFAULT_TENANT),
        )


@dataclass(frozen=True)
class JobResult:
    """How a finished job answers: HTTP status, the version it made, and an OperationOutcome if any."""

    status: int
    version_id: int | None = None
    last_updated: datetime | None = None
    outcome: dict[str, Any] | None = None
    entries: list[dict[str, Any]] | None = None  # a transaction's per-entry results

    @property
    def succeeded(self) -> bool:
        return self.status < 400

    @property
    def changed_nothing(self) -> bool:
        """A patch that left the resource as it was: applied, with no new version (its outcome says so)."""
        issues = (self.outcome or {}).get("issue", [])
        return self.status == 200 and any(str(i.get("diagnostics", "")).startswith(CHANGED_NOTHING) for i in issues)

    @property
    def status_line(self) -> str:
        return f"{self.status} {REASONS.get(self.status, '')}".strip()

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "status": self.status,
            "versionId": self.version_id,
            "lastUpdated": self.last_updated,
            "outcome": self.outcome,
        }
        if self.entries is not None:
            document["entries"] = self.entries
        return document

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> JobResult:
        return cls(doc["status"], doc.get("versionId"), doc.get("lastUpdated"), doc.get("outcome"), doc.get("entries"))

    @classmethod
    def error(cls, status: int, code: str, diagnostics: str, *expression: str) -> JobResult:
        return cls(status, outcome=operation_outcome([Issue(code, diagnostics, expression)]))


@dataclass(frozen=True)
class Job:
    """A job as stored: request, state, timestamps, result, callback."""

    id: str
    request: JobRequest
    state: JobState
    accepted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: JobResult | None = None
    callback_url: str | None = None
    digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def queue_key(self) -> str:
        return self.request.queue_key

    @property
    def tenant(self) -> str:
        return self.request.tenant

    @property
    def owner(self) -> str | None:
        """The subject that submitted the job; only it (or a jobs admin) may see it."""
        return self.request.actor.subject if self.request.actor else None

    @property
    def client(self) -> str:
        """The client whose unfinished-job count this job is in ('' when none)."""
        return self.request.actor.client_id if self.request.actor else ""

    def finished(self, result: JobResult, at: datetime) -> Job:
        state = JobState.APPLIED if result.succeeded else JobState.FAILED
        return replace(self, state=state, finished_at=at, result=result)

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "key": self.key,
            "request": self.request.to_document(),
            "state": self.state.value,
            "acceptedAt": self.accepted_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "result": self.result.to_document() if self.result else None,
            "callbackUrl": self.callback_url,
            "digest": self.digest,
            **self.extra,
        }

    def to_payload(self) -> str:
        """What the Redis queue carries next to the job id: a copy of the accepted request, so a worker
        need not look the job up (MongoDB keeps the original)."""
        request = {**self.request.to_document(), "body": base64.b64encode(self.request.body).decode()}
        return json.dumps(
            {
                "id": self.id,
                "request": request,
                "acceptedAt": self.accepted_at.isoformat(),
                "callbackUrl": self.callback_url,
            }
        )

    @classmethod
    def from_payload(cls, payload: str) -> Job:
        data = json.loads(payload)
        request = {**data["request"], "body": base64.b64decode(data["request"]["body"])}
        return cls(
            data["id"],
            JobRequest.from_document(request),
            JobState.ACCEPTED,
            datetime.fromisoformat(data["acceptedAt"]),
            callback_url=data.get("callbackUrl"),
        )

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Job:
        known = {
            "_id",
            "key",
            "request",
            "state",
            "acceptedAt",
            "startedAt",
            "finishedAt",
            "result",
            "callbackUrl",
            "digest",
        }
        return cls(
            doc["_id"],
            JobRequest.from_document(doc["request"]),
            JobState(doc["state"]),
            doc["acceptedAt"],
            doc.get("startedAt"),
            doc.get("finishedAt"),
            JobResult.from_document(doc["result"]) if doc.get("result") else None,
            doc.get("callbackUrl"),
            doc.get("digest", ""),
            {k: v for k, v in doc.items() if k not in known},
        )


def outcome_of(severity: str, code: str, diagnostics: str) -> dict[str, Any]:
    """A one-issue OperationOutcome (informational answers such as `return=OperationOutcome`)."""
    return operation_outcome([Issue(code, diagnostics, severity=severity)])


def result_event(job: Job | str, result: JobResult, now: datetime) -> dict[str, Any]:
    """The outcome record of `job` (or of a bare job id, for an entry refused at intake)."""
    state = JobState.APPLIED if result.succeeded else JobState.FAILED
    job_id = job if isinstance(job, str) else job.id
    event: dict[str, Any] = {
        "_id": f"{job_id}/result",
        "state": state.value,
        "at": now,
        "result": result.to_document(),
        "key": "" if isinstance(job, str) or job.request.action.value == "transaction" else job.key,
    }
    if not isinstance(job, str):
        document = job.to_document()
        event["job"] = {**document, "request": {**document["request"], "body": b""}}
    return event


def traced_fields(job: Job) -> dict[str, Any]:
    """The request id and recorded headers of a job's request, for its log line (none when it had none)."""
    actor = job.request.actor
    if actor is None or not (actor.request_id or actor.trace.headers):
        return {}
    return {"request_id": actor.request_id, "headers": dict(actor.trace.headers)}
