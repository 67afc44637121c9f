"""Per-resource ordering in Redis: FIFO queues, leases, wake-ups."""

from worker.ordering.key_queues import Finished, Heads, KeyQueues

__all__ = ["Finished", "Heads", "KeyQueues"]
