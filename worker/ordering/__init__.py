"""Per-resource ordering in Redis: FIFO queues, leases, wake-ups."""

from worker.ordering.key_queues import KeyQueues

__all__ = ["KeyQueues"]
