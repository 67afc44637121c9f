"""Drains: how a key that has work gets a worker. The task names are defined here, once.

A key that needs a drain is offered on the ready list (worker/schedule/, `offer`),
and drainers pull it: one Celery message starts a drainer, which then drains
keys until the list stays empty. A message is sent only when items wait and
fewer drainers live than the workers have pool processes, so under load no
message is sent per key. The Celery tasks (worker/celery/tasks.py) are
registered under the same names.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from celery import Celery

from worker.schedule import DrainerLimits, KeySchedule
from worker.settings import Settings

DRAIN_TASK = "fhir_patch.drain"
CALLBACK_TASK = "fhir_patch.callback"

log = logging.getLogger("fhir_patch.drains")


class DrainSender(Protocol):
    def send(self, keys: list[str], together: bool = False) -> None:
        """Ask for a drain of `keys` (each owes one: its mark is set): each key is offered alone, or, `together`,
        as one item (a transaction's keys, so that one drainer drains them in turn and no two contend for its
        leases); with no keys, only make sure a drainer serves what waits (and the retries now due). Never
        raises: a key whose offer failed keeps its mark, so the reconciler offers it again
        (worker/service/reconciler.py, stalled keys)."""


def drainer_limits(settings: Settings) -> DrainerLimits:
    """One drainer per pool process of the deployment (FHIR_PATCH_DRAINERS, or the workers this host's settings
    describe); silent for a lease: gone."""
    cap = settings.drainers or settings.workers * settings.worker_concurrency
    return DrainerLimits(max(1, cap), max(1.0, settings.lease_seconds))


class CeleryDrains:
    """Drains offered on the ready list; drainers started by Celery messages."""

    def __init__(self, celery: Celery, schedule: KeySchedule, limits: DrainerLimits) -> None:
        self._celery = celery
        self._schedule = schedule
        self._limits = limits

    def send(self, keys: list[str], together: bool = False) -> None:
        items = [" ".join(keys)] if together and keys else list(keys)
        try:
            for name in self._schedule.offer(items, time.time(), self._limits):
                self.start(name)
        except Exception:
            log.warning("drain not offered; the reconciler will offer it", exc_info=True)

    def start(self, drainer: str) -> None:
        """Send the message that runs `drainer` (its place in the count is taken already)."""
        self._celery.send_task(DRAIN_TASK, kwargs={"drainer": drainer})

    def workers_answering(self, timeout: float) -> list[str]:
        """The names of the worker processes that answer a ping within `timeout` seconds."""
        return sorted(name for reply in self._celery.control.ping(timeout=timeout) or [] for name in reply)
