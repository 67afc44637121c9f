"""Callbacks: POST a finished job's result Bundle to the client's URL, signed as Standard Webhooks says.

Delivery is at least once (the `webhook-id` is the job id, so a receiver can
drop repeats), retried with exponential backoff and full jitter, never
following redirects, and given up on 410 Gone or after the configured time.
The job document is the outbox: its `callback` field says what is still owed,
so a lost retry message is found again by the reconciler.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from standardwebhooks.webhooks import Webhook

from worker.model.callback_targets import CallbackRefused, CallbackTarget, checked_callback
from worker.model.jobs import Job
from worker.model.results import result_bundle
from worker.model.stores import Stores
from worker.model.tenants import DEFAULT_TENANT
from worker.patch.fhir_json import dumps
from worker.settings import Settings

log = logging.getLogger("fhir_patch.callbacks")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 300.0


def retry_delay(attempts: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^n)], at least
    base/2."""
    ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1))
    return max(FIRST_RETRY_SECONDS / 2, rng.uniform(0, ceiling))


@dataclass(frozen=True)
class Delivery:
    """What happened: `retry_in` seconds until the next attempt, or None when done (delivered or given up)."""

    state: str
    retry_in: float | None = None


class CallbackSender:
    def __init__(
        self,
        settings: Settings,
        database: Stores | Mapping[str, Stores],
        client: httpx.Client,
        rng: random.Random | None = None,
    ) -> None:
        """`database`: the registry of each tenant (or the default tenant's alone)."""
        self._settings = settings
        self._registries = database if isinstance(database, Mapping) else {DEFAULT_TENANT: database}
        self._client = client
        self._rng = rng or random.Random()
        self._webhook = Webhook(settings.callback_secret) if settings.callback_secret else None

    def deliver(self, job_id: str, attempt: int, now: datetime, tenant: str = DEFAULT_TENANT) -> Delivery:
        """Attempt number `attempt` to deliver the callback of job `job_id` of `tenant`."""
        db = self._registries.get(tenant)
        job = db.jobs.get(job_id) if db is not None else None
        if db is None or job is None or not job.callback_url or job.result is None:
            return Delivery("nothing-owed")
        if db.jobs.callback_state(job_id) != "pending":
            return Delivery("nothing-owed")
        try:
            target = checked_callback(
                job.callback_url, self._settings.callback_allow
            )  # again: DNS and settings may change
        except CallbackRefused as exc:
            log.warning("callback refused at delivery: %s", exc, extra={"job_id": job.id})
            return self._record(db, job, "gave-up", attempt, now, None)
        status = self._post(db, job, target, now)
        if status is not None and 200 <= status < 300:
            return self._record(db, job, "delivered", attempt, now, status)
        if status == 410:
            return self._record(db, job, "gave-up", attempt, now, status)
        assert job.finished_at is not None
        if now - job.finished_at >= timedelta(seconds=self._settings.callback_give_up_seconds):
            return self._record(db, job, "gave-up", attempt, now, status)
        delay = retry_delay(attempt, self._rng)
        log.info(
            "callback failed; retrying",
            extra={"job_id": job.id, "status": status, "attempt": attempt, "retry_in": round(delay, 2)},
        )
        return Delivery("pending", delay)

    def _record(self, db: Stores, job: Job, state: str, attempts: int, now: datetime, status: int | None) -> Delivery:
        db.jobs.callback_ended(job.id, state, attempts, status, now)
        log.info("callback %s", state, extra={"job_id": job.id, "status": status, "attempt": attempts})
        return Delivery(state)

    def _post(self, db: Stores, job: Job, target: CallbackTarget, now: datetime) -> int | None:
        assert self._webhook is not None and job.callback_url and job.result
        version = None
        if job.result.version_id is not None:
            version = db.resources.version(job.request.resource_type, job.request.resource_id, job.result.version_id)
        payload = dumps(result_bundle(job, version.text if version else None, self._settings.base_url))
        signature = self._webhook.sign(job.id, now, payload)
        headers = {
            "content-type": "application/fhir+json",
            "webhook-id": job.id,
            "host": target.host_header,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        extensions = {"sni_hostname": target.sni} if target.sni else None
        try:  # to the address that was checked, never a fresh lookup
            return self._client.post(
                target.connect_url, content=payload.encode(), headers=headers, extensions=extensions
            ).status_code
        except httpx.HTTPError as exc:
            log.info("callback not reached: %s", exc, extra={"job_id": job.id})
            return None


def http_client() -> httpx.Client:
    """No redirects (a redirect could lead a signed result outside the allow-list), short timeouts."""
    return httpx.Client(follow_redirects=False, timeout=httpx.Timeout(10.0, connect=3.0), trust_env=False)
