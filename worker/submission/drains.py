"""Drain messages: how a key that has work gets a worker. The task names are defined here, once.

The submission path sends a drain message for a key that had none outstanding
(Arrivals.enqueue says when); the Celery tasks (worker/celery/tasks.py) are
registered under the same names.
"""

from __future__ import annotations

import logging
from typing import Protocol

from celery import Celery

DRAIN_TASK = "fhir_patch.drain"
CALLBACK_TASK = "fhir_patch.callback"
KEYS_PER_MESSAGE = 25  # one drain message serves several keys (a feed's block touches many)

log = logging.getLogger("fhir_patch.drains")


class DrainSender(Protocol):
    def send(self, keys: list[str], together: bool = False) -> None:
        """Ask for a drain of `keys`, in messages of KEYS_PER_MESSAGE keys (or, `together`, one message: a
        transaction's keys, so that one task drains them in turn and no two tasks contend for its leases). Never
        raises: a key whose message was not sent is queued and marked sent, so the reconciler sends it again
        (worker/service/reconciler.py, stalled keys)."""


class CeleryDrains:
    """Drain messages through the Celery broker."""

    def __init__(self, celery: Celery) -> None:
        self._celery = celery

    def send(self, keys: list[str], together: bool = False) -> None:
        size = max(1, len(keys)) if together else KEYS_PER_MESSAGE
        for start in range(0, len(keys), size):
            block = keys[start : start + size]
            try:
                self._celery.send_task(DRAIN_TASK, args=[block if len(block) > 1 else block[0]])
            except Exception:
                log.warning("drain message not sent; the reconciler will send it", exc_info=True)

    def workers_answering(self, timeout: float) -> list[str]:
        """The names of the worker processes that answer a ping within `timeout` seconds."""
        return sorted(name for reply in self._celery.control.ping(timeout=timeout) or [] for name in reply)
