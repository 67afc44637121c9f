"""The connections and services of one worker process, built from Settings on first use.

Celery's prefork pool forks children; pymongo and redis clients must not cross
a fork, so each process builds its own on first use (keyed by pid).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import redis

from worker.callbacks import CallbackSender, http_client
from worker.jobs import Job
from worker.ordering import KeyQueues
from worker.service import ChangeService
from worker.settings import Settings
from worker.storage import Database


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    database: Database
    redis: "redis.Redis"
    queues: KeyQueues
    service: ChangeService
    callbacks: CallbackSender
    http: httpx.Client

    @classmethod
    def build(cls, settings: Settings, on_finished: Callable[[Job], None], send_drain: Callable[[str], None] = lambda key: None) -> Runtime:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=3, health_check_interval=30)
        queues = KeyQueues(client, settings.namespace)
        database = Database.open(settings, (queues.newest_version, queues.remember_copy, queues.newest_copy))
        http = http_client()
        return cls(settings, database, client, queues, ChangeService(settings, database, queues, on_finished, send_drain=send_drain),
                   CallbackSender(settings, database, http), http)


_by_pid: dict[int, Runtime] = {}


def runtime_for(settings: Settings, on_finished: Callable[[Job], None], send_drain: Callable[[str], None]) -> Runtime:
    """This process's Runtime (a new one after a fork)."""
    pid = os.getpid()
    if pid not in _by_pid:
        _by_pid.clear()
        _by_pid[pid] = Runtime.build(settings, on_finished, send_drain)
    return _by_pid[pid]
