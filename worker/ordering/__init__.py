"""Per-resource ordering in Redis: FIFO queues, leases, wake-ups."""

from worker.ordering.key_queues import Finished, KeyQueues, NextJob

__all__ = ["Finished", "KeyQueues", "NextJob"]
