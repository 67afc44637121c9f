"""Per-resource ordering in Redis: FIFO queues, leases, wake-ups."""

from worker.ordering.key_queues import KeyQueues, NextJob

__all__ = ["KeyQueues", "NextJob"]
