"""The states of a resource key, and the mark that records them in Redis (`{ns}:{tenant/key}:mark`).

A key's state is read from three things Redis holds for it: its queue (jobs waiting, in arrival order), its
lease (a drain applies its jobs) and its mark (a drain is owed and where it stands). This module is the only
code that writes or reads a mark's text; worker/schedule/port.py lists who moves a key from one state to the
next.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class KeyState(Enum):
    """Where a key stands. A drain holding the lease (DRAINING) keeps the mark it was taken with."""

    IDLE = "idle"  # nothing queued: no mark, no lease
    OFFERED = "offered"  # jobs queued, the key waits on the ready list for a drainer
    RETRYING = "retrying"  # jobs queued, a drain failed: the key joins the ready list when its retry is due
    TAKEN = "taken"  # a drainer of one worker process took the key off the ready list
    DRAINING = "draining"  # a lease is held: its holder applies the key's jobs, one at a time
    PARKED = "parked"  # a transaction heads the queue and waits for its other keys: no mark, no lease
    STALLED = "stalled"  # jobs queued, and no drain can come any more (the reconciler revives it)


class MarkKind(Enum):
    OFFERED = "s"
    RETRYING = "r"
    TAKEN = "t"


@dataclass(frozen=True)
class Mark:
    """A key's mark: offered at `since`, retrying (due at `since`), or taken by `worker` at `since`."""

    kind: MarkKind
    since: float
    worker: str = ""

    @classmethod
    def offered(cls, now: float) -> Mark:
        return cls(MarkKind.OFFERED, now)

    @classmethod
    def retrying(cls, due: float) -> Mark:
        return cls(MarkKind.RETRYING, due)

    @classmethod
    def taken(cls, worker: str, now: float) -> Mark:
        return cls(MarkKind.TAKEN, now, worker)

    def encode(self) -> str:
        if self.kind is MarkKind.TAKEN:
            return f"t:{self.worker}:{self.since}"
        return f"{self.kind.value}:{self.since}"

    @classmethod
    def decode(cls, text: str | None) -> Mark | None:
        """The mark a key's text holds (None: no mark, or one this code cannot read, which counts as none)."""
        kind, _, rest = (text or "").partition(":")
        worker, _, since = rest.rpartition(":")
        try:
            return cls(MarkKind(kind), float(since), worker)
        except ValueError:
            return None


def taken_prefix(worker: str) -> str:
    """The start of every mark `worker` takes a key with (a script forgets a mark only if it is still ours)."""
    return f"t:{worker}:"


@dataclass(frozen=True)
class KeyView:
    """What the reconciler reads of a key: jobs queued, a lease held, and its mark."""

    depth: int
    leased: bool
    mark: Mark | None
    lease_left: float = 0.0  # seconds before the lease expires (when leased and it has an expiry)

    @property
    def taken_by(self) -> str | None:
        return self.mark.worker if self.mark is not None and self.mark.kind is MarkKind.TAKEN else None

    @property
    def since(self) -> float:
        return self.mark.since if self.mark is not None else 0.0

    def state(self, worker_alive: bool = True) -> KeyState:
        """The key's state, given whether the process that took it (if any) still lives."""
        if not self.depth:
            return KeyState.IDLE
        if self.leased:
            return KeyState.DRAINING
        if self.mark is None:
            return KeyState.PARKED
        if self.mark.kind is MarkKind.TAKEN:
            return KeyState.TAKEN if worker_alive else KeyState.STALLED
        return KeyState.RETRYING if self.mark.kind is MarkKind.RETRYING else KeyState.OFFERED
