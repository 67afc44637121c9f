"""The Redis side beside the key schedule: admission, newest copies, counters, metrics, wake-ups."""

from worker.ordering.key_queues import KeyQueues

__all__ = ["KeyQueues"]
