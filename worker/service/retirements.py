"""Finished jobs leave the in-flight collection in batches, not one command each.

A job's outcome is recorded (and its waiter woken) at once; taking it out of
`jobs` and into its expiry slot can wait a moment, because nothing reads a
finished job from there: the reconciler retires any finished job it still finds
in flight (after a crash lost a batch). One batch is one update of an expiry slot
and one delete command, for every job that finished meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from worker.model.stores import Jobs

BATCH_LIMIT = 500  # flushed at once when this many wait (else by the owner's timer)


class Retirements:
    """Finished job ids waiting to be retired together; `flush` is called by a timer (and when full)."""

    def __init__(self, jobs: Jobs, clock: Callable[[], datetime]) -> None:
        self._jobs = jobs
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: list[str] = []

    def add(self, job_ids: list[str]) -> None:
        with self._lock:
            self._waiting += job_ids
            full = len(self._waiting) >= BATCH_LIMIT
        if full:
            self.flush()

    def flush(self) -> int:
        """Retire what waits (one batch); how many. If storage fails they wait for the next flush."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        if not batch:
            return 0
        try:
            self._jobs.retire(batch, self._clock())
        except BaseException:
            with self._lock:
                self._waiting = batch + self._waiting
            raise
        return len(batch)
