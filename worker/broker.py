"""The broker: Celery configured for an at-least-once pipeline over Redis (the API sends with it, workers receive).

Each setting states why it is there. Correctness of the patch service never
rests on Celery alone: jobs are recorded in MongoDB before they are queued,
results are recorded before the message is acknowledged, and version writes
are compare-and-set. Celery gives delivery; MongoDB gives truth.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from worker.redis_clients import broker
from worker.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    return {**_delivery(settings), **_limits_and_formats(settings)}


def _delivery(settings: Settings) -> dict[str, Any]:
    """At-least-once delivery over Redis, results in MongoDB."""
    broker_url, sentinel_options = broker(settings.redis_url, settings)
    return {
        # FHIR_PATCH_REDIS_URL, or with Sentinel kombu's sentinel:// transport (worker/redis_clients.py).
        "broker_url": broker_url,
        # One queue per deployment namespace: deployments sharing a Redis
        # never take each other's work.
        "task_default_queue": settings.namespace,
        # And one control exchange per namespace: a ping (the readiness check's "does a worker answer?") reaches
        # this deployment's workers only, not those of another deployment on the same Redis.
        "control_exchange": f"{settings.namespace}-control",
        # Results live in MongoDB (the job document); a Celery result backend
        # would be a second, weaker copy of the truth.
        "result_backend": None,
        "task_ignore_result": True,
        # Acknowledge only after the task body returns: a worker that dies
        # mid-job leaves the message to be redelivered, not lost.
        "task_acks_late": True,
        # With late acks, a worker killed by SIGKILL or OOM must not have the
        # message acknowledged on its behalf.
        "task_reject_on_worker_lost": True,
        # One message in flight per process: prefetched messages would sit
        # behind a long job and, with late acks, be redelivered late.
        "worker_prefetch_multiplier": 1,
        # Redis has no real acks: an unacknowledged message is re-sent after
        # the visibility timeout. It must exceed any job's duration or a
        # running job would be delivered twice (harmless, but wasteful).
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds,
            **sentinel_options,
        },
    }


def _limits_and_formats(settings: Settings) -> dict[str, Any]:
    """What may be sent, how long a task may run, what it reports."""
    return {
        # JSON only: pickle would let anyone who can write to Redis run code.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # Wait for Redis at start instead of crashing the worker.
        "broker_connection_retry_on_startup": True,
        # If the broker connection drops, running late-ack tasks will be
        # redelivered anyway; cancel them rather than finish twice.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # A drain that runs past the hard limit (10 x the per-job budget; a job's own work is stopped at the budget,
        # this catches what a timer cannot interrupt) is killed; its message goes back to the queue rather than
        # being acknowledged, the next worker takes the dead holder's lease over at once and counts an attempt at
        # the job it was applying, which fails alone after a few (Drainer._take_over).
        "task_time_limit": max(60, int(10 * settings.job_time_limit_seconds)),
        "task_acks_on_failure_or_timeout": False,
        # Task events cost a Redis publish per task state, on every task: off unless someone watches. Flower turns
        # them on in the workers when it starts (its enable_events option, on by default); `make flower` runs it.
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def create_celery(settings: Settings) -> Celery:
    """A Celery application bound to `settings` (tasks are registered by worker.celery.tasks)."""
    app = Celery("fhir_patch_worker", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
