"""The one drain loop: a drainer takes ready keys and drains them, until the ready list stays empty.

- A drainer first resumes the keys it held when its process died (its Celery message came back), then takes
  items from the ready list (worker/schedule/: `take`), up to its fair share, and drains them: single keys
  together (worker/service/drain.py), a transaction's keys in turn.
- Nothing comes for LINGER_SECONDS: it retires (in the same step that could still take a last item, so an
  offer never counts on a drainer that will not look again).
- After DRAINER_SECONDS it hands over to a new message of its own, so callbacks waiting in the broker get a
  pool process and no task nears Celery's time limit.
- A drain that fails is retried through the ready list: the key becomes a due-time entry (`retry`), with
  backoff; a job that failed MAX_JOB_ATTEMPTS times fails alone and its key goes on. There is no other way a
  drain is delivered.
- Storage outages (StorageUnavailable) are not the job's fault: they propagate, and the Celery task is retried
  with backoff while the keys stay marked as taken by this live process.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from worker.errors import StorageUnavailable
from worker.schedule import KeySchedule
from worker.service.drain import MAX_JOB_ATTEMPTS, Drained, Drainer

LINGER_SECONDS = 0.5  # a drainer waits this long for the next key before it retires (then a message starts one)
DRAINER_SECONDS = 5.0  # then the drainer hands over to a new message of its own
RETRY_FIRST_SECONDS = 1.0  # a failed drain is offered again after 1 s, 2 s, 4 s ... at most RETRY_MAX_SECONDS
RETRY_MAX_SECONDS = 30.0

log = logging.getLogger("fhir_patch.loop")


def retry_in(attempts: int) -> float:
    """How long a key whose drain failed `attempts` times waits before it is offered again."""
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2.0 ** max(0, attempts - 1))


@dataclass
class LoopParts:
    """What the loop works with: the schedule, the drainer, this process's name, and how to offer keys again,
    start a drainer's next message and count idle drains."""

    schedule: KeySchedule
    drainer: Drainer
    worker: str
    offer: Callable[[list[str]], None]
    start: Callable[[str], None]
    count: Callable[[str, int], None]


class DrainLoop:
    def __init__(
        self,
        parts: LoopParts,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` stamps marks and due times (shared with every process); `monotonic` times a drainer's turn."""
        self._p = parts
        self._clock = clock
        self._monotonic = monotonic

    def run(self, drainer: str | None, keys: list[str] | None = None) -> int:
        """Drain `keys` (taken already), then, for a drainer, what the ready list offers; the jobs processed."""
        given = list(keys or [])
        if given:
            self._p.schedule.taken(given, self._p.worker, self._clock())  # the reconciler waits while we live
        processed = self._drain_keys(given)
        if drainer is not None:
            processed += self._pull(drainer)
        return processed

    def _pull(self, drainer: str) -> int:
        started, schedule, me = self._monotonic(), self._p.schedule, self._p.worker
        resumed = schedule.resumed(drainer)
        if resumed:
            schedule.taken(resumed, me, self._clock())
        processed = self._drain_keys(resumed)
        while self._monotonic() - started < DRAINER_SECONDS:
            items = schedule.take(drainer, me, self._clock())
            if not items:
                seconds, mode = self._idle()
                items = schedule.take(drainer, me, self._clock(), mode, schedule.wait(seconds))
                if not items and mode == "retire":
                    return processed  # retired: no longer counted, so the next offer starts a drainer
            processed += self._drain_keys([item[0] for item in items if len(item) == 1])
            for group in (item for item in items if len(item) > 1):  # a transaction's keys, drained in turn
                processed += sum(self._drain_keys([key]) for key in group)
        schedule.hand_over(drainer, self._clock())
        self._p.start(drainer)
        return processed

    def _idle(self) -> tuple[float, str]:
        """How long to wait for the next item, and what to do if none comes: retire after LINGER_SECONDS, unless a
        retry is due within this drainer's turn: then wait for it and stay counted, so a retry comes when due
        rather than at the reconciler's next pass."""
        due = self._p.schedule.next_due()
        if due is None or due - self._clock() > DRAINER_SECONDS:
            return LINGER_SECONDS, "retire"
        return min(LINGER_SECONDS, max(0.01, due - self._clock())), "pull"

    def _drain_keys(self, batch: list[str]) -> int:
        batch = list(dict.fromkeys(batch))
        together = self._drained_together(batch) if len(batch) > 1 else {}
        processed, idle = 0, 0
        for key in batch:
            drained = together.get(key) or self._drained_alone(key)
            if drained is None:
                continue
            if drained.held_elsewhere:
                self._p.schedule.untake(key, self._p.worker)
            processed += drained.processed
            idle += drained.processed == 0
            if drained.more:
                self._p.schedule.reoffer(key, self._clock())
                self._p.offer([key])
        if idle:
            self._p.count("idle_drains", idle)
        return processed

    def _drained_together(self, keys: list[str]) -> dict[str, Drained]:
        try:
            return self._p.drainer.drain_together(keys)
        except StorageUnavailable:
            raise
        except Exception:  # drained one by one instead, where a job that makes its drain fail is found alone
            log.exception("keys drained together failed; draining them one by one", extra={"keys": len(keys)})
            return {}

    def _drained_alone(self, key: str) -> Drained | None:
        try:
            return self._p.drainer.drain(key)
        except StorageUnavailable:
            raise
        except Exception:  # a job that makes the drain fail: retried with backoff, then failed alone
            self._failed(key)
            return None

    def _failed(self, key: str) -> None:
        schedule = self._p.schedule
        job_id, _ = schedule.head(key)
        attempts = schedule.attempt(job_id, f"failed:{uuid.uuid4().hex}") if job_id else 0
        log.exception("drain failed", extra={"key": key, "job_id": job_id, "attempt": attempts})
        if job_id and attempts >= MAX_JOB_ATTEMPTS:
            try:
                self._p.drainer.give_up(key, attempts)
            except Exception:  # even its failure could not be recorded: try again at the next attempt
                log.exception("could not give the job up", extra={"key": key, "job_id": job_id})
        schedule.retry(key, self._clock() + retry_in(attempts))
