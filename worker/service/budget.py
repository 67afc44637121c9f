"""A time budget for one job's pure work (planning a change), so that no patch can hold a worker.

The engine bounds what input can cost (numbers, nesting, path size, RE2
regexes); this is the backstop for whatever slips past those. It uses an
interval timer, so it works where Celery runs tasks (the main thread of a
pool process) and is a no-op elsewhere (a thread cannot be interrupted this way;
there the task's hard time limit still applies). A single long C call is not
interrupted either: that too is left to the hard limit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class OverBudget(Exception):
    """The job's work took longer than its budget."""


def _expire(signum: int, frame: FrameType | None) -> None:
    raise OverBudget()


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise OverBudget in the block after `seconds` of wall time (main thread only; 0 disables it)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
