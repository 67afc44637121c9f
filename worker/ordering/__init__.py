"""Per-resource ordering in Redis: arrivals, queues and leases, transaction holds, copies, counters, wake-ups."""

from worker.ordering.key_queues import KeyQueues
from worker.ordering.leases import Finished, Heads, KeyState

__all__ = ["Finished", "Heads", "KeyQueues", "KeyState"]
