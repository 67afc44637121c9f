"""The connections and services of one worker process, built from Settings on first use.

Celery's prefork pool forks children; pymongo and redis clients must not cross
a fork, so each process builds its own on first use (keyed by pid).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import redis
from celery import Celery

from worker.errors import StorageUnavailable
from worker.model.clock import utc_now
from worker.model.jobs import Job
from worker.ordering import KeyQueues
from worker.redis_clients import sync_client
from worker.service.callbacks import CallbackSender, http_client
from worker.service.drain import Drainer
from worker.service.loop import DrainLoop, LoopParts
from worker.service.retirements import Retirements
from worker.settings import Settings
from worker.storage.registries import Registries
from worker.submission.drains import CeleryDrains, drainer_limits


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    registries: Registries
    redis: redis.Redis
    queues: KeyQueues
    drainer: Drainer
    loop: DrainLoop
    callbacks: CallbackSender
    http: httpx.Client
    drains: CeleryDrains
    retirements: Mapping[str, Retirements]  # per tenant

    @classmethod
    def build(cls, settings: Settings, app: Celery, on_finished: Callable[[Job], None]) -> Runtime:
        client = sync_client(
            settings.redis_url, settings, socket_timeout=10, socket_connect_timeout=3, health_check_interval=30
        )
        queues = KeyQueues(client, settings.namespace)
        with contextlib.suppress(StorageUnavailable):  # Redis may come later; the reconciler asks again
            # Record the server answering before any key is taken, so that a failover before the reconciler's
            # first pass is noticed too (served_since: a server first seen is the first one).
            queues.schedule.served_since(time.time())
        registries = Registries.open(settings, queues.copies.hint)
        http = http_client()
        drains = CeleryDrains(app, queues.schedule, drainer_limits(settings))
        retirements = {tenant: Retirements(registries[tenant].jobs, utc_now) for tenant in registries}
        drainer = Drainer(
            settings,
            registries.by_tenant,
            queues,
            on_finished,
            send_drain=lambda key: drains.send([key]),
            holder=worker_id(),
            holder_gone=lambda holder: process_gone(holder, queues.schedule.alive),
            retire=lambda tenant, job_ids: retirements[tenant].add(job_ids),
        )
        loop = DrainLoop(
            LoopParts(queues.schedule, drainer, worker_id(), drains.send, drains.start, queues.counters.count)
        )
        callbacks = CallbackSender(settings, registries.by_tenant, http)
        return cls(settings, registries, client, queues, drainer, loop, callbacks, http, drains, retirements)


_by_pid: dict[int, Runtime] = {}
log = logging.getLogger("fhir_patch.runtime")


def worker_id() -> str:
    """This process, as drain messages it takes name it (`t:<worker>:<time>`)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(holder: str, alive: Callable[[str], bool]) -> bool:
    """Whether the worker process `holder` (host:pid) is known to be dead: on this host, by its pid (at once);
    elsewhere, by its heartbeat having expired."""
    host, _, pid = holder.rpartition(":")
    if not host or not pid.isdigit():
        return False
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return not alive(holder)


def runtime_for(settings: Settings, app: Celery, on_finished: Callable[[Job], None]) -> Runtime:
    """This process's Runtime (a new one after a fork), with its heartbeat running."""
    pid = os.getpid()
    if pid not in _by_pid:
        _by_pid.clear()
        _by_pid[pid] = Runtime.build(settings, app, on_finished)
        threading.Thread(target=_beat, args=(_by_pid[pid], worker_id()), name="heartbeat", daemon=True).start()
        threading.Thread(target=_retire, args=(_by_pid[pid].retirements,), name="retirements", daemon=True).start()
    return _by_pid[pid]


def _beat(runtime: Runtime, worker: str) -> None:
    """While this process lives, the drain messages it took are not lost: the reconciler leaves their keys alone.
    Between beats, it gives up the leases a Redis outage kept its drains from releasing, as soon as Redis answers
    (after a Sentinel failover they would stall their keys for a lease), and offers their keys again."""
    interval = max(0.2, runtime.settings.lease_seconds / 3)
    next_beat = 0.0
    while True:
        try:
            if time.monotonic() >= next_beat:
                runtime.queues.schedule.heartbeat(worker, runtime.settings.lease_seconds)
                next_beat = time.monotonic() + interval
            _offer_again(runtime, runtime.drainer.release_pending())
        except Exception:  # a passing Redis outage: the next beat tries again
            log.warning("heartbeat not written, or leases not given up", exc_info=True)
        time.sleep(min(interval, PENDING_RELEASE_SECONDS))


PENDING_RELEASE_SECONDS = 0.5


def _offer_again(runtime: Runtime, keys: list[str]) -> None:
    for key in keys:
        runtime.queues.schedule.reoffer(key, time.time())
    if keys:
        runtime.drains.send(keys)
        log.warning("leases an outage kept were given up", extra={"count": len(keys)})


RETIRE_EVERY_SECONDS = 0.2


def _retire(retirements: Mapping[str, Retirements]) -> None:
    """Finished jobs leave the in-flight collection a batch at a time (worker/service/retirements.py)."""
    while True:
        time.sleep(RETIRE_EVERY_SECONDS)
        retire_now(retirements)


def retire_now(retirements: Mapping[str, Retirements]) -> None:
    """Retire what waits, in each tenant's registry; a failure is logged and they wait for the next flush (or, if
    this process dies, for the reconciler)."""
    for waiting in retirements.values():
        try:
            waiting.flush()
        except Exception:  # a passing outage
            log.warning("finished jobs not retired yet", exc_info=True)
