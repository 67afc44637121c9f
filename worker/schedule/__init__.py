"""The life of a resource key, one owner: the KeySchedule port (port.py), its states (states.py), its Redis
implementation (redis_schedule.py, with lua/) and its memory twin (memory.py)."""

from worker.schedule.port import UNCHANGED, Arrival, Claimed, DrainerLimits, Finished, Heads, KeySchedule, Step
from worker.schedule.states import KeyState, KeyView, Mark, MarkKind

__all__ = [
    "Arrival",
    "Claimed",
    "DrainerLimits",
    "Finished",
    "Heads",
    "KeySchedule",
    "KeyState",
    "KeyView",
    "Mark",
    "MarkKind",
    "Step",
    "UNCHANGED",
]
