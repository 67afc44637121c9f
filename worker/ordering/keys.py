"""The Redis key schema, in one place: every module that touches Redis names its keys through this."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    namespace: str

    def queue(self, key: str) -> str:
        return f"{self.namespace}:q:{key}"

    def lease(self, key: str) -> str:
        return f"{self.namespace}:lease:{key}"

    def sched(self, key: str) -> str:
        return f"{self.namespace}:sched:{key}"

    def copy(self, key: str) -> str:
        return f"{self.namespace}:cur:{key}"

    def alive(self, worker: str) -> str:
        return f"{self.namespace}:alive:{worker}"

    def group(self, group_id: str) -> str:
        return f"{self.namespace}:group:{group_id}"

    def callback_scheduled(self, job_id: str) -> str:
        return f"{self.namespace}:cb:{job_id}"

    def attempts(self, job_id: str) -> str:
        return f"{self.namespace}:attempts:{job_id}"

    @property
    def payloads(self) -> str:
        return f"{self.namespace}:payload"

    @property
    def ready(self) -> str:
        """Items (keys) waiting for a drainer (worker/ordering/ready.py)."""
        return f"{self.namespace}:ready"

    @property
    def drainers(self) -> str:
        return f"{self.namespace}:drainers"

    @property
    def drainer_items(self) -> str:
        return f"{self.namespace}:drainer-item"

    @property
    def drainer_seq(self) -> str:
        return f"{self.namespace}:drainer-seq"

    @property
    def keys_set(self) -> str:
        return f"{self.namespace}:keys"

    @property
    def counts(self) -> str:
        return f"{self.namespace}:metrics:counts"

    @property
    def latency(self) -> str:
        return f"{self.namespace}:metrics:latency"

    @property
    def done_channel(self) -> str:
        """The pub/sub channel of job wake-ups."""
        return f"{self.namespace}:done"

    @property
    def reconciler_lock(self) -> str:
        return f"{self.namespace}:reconciler"

    @property
    def unfinished(self) -> str:
        return f"{self.namespace}:unfinished"

    @property
    def synced(self) -> str:
        """Present while every job in flight in MongoDB is in its Redis queue (or was never acknowledged)."""
        return f"{self.namespace}:synced"

    @property
    def held(self) -> str:
        """Jobs that arrived while Redis was out of sync, in arrival order (JSON: id, keys)."""
        return f"{self.namespace}:held"

    @property
    def held_payloads(self) -> str:
        return f"{self.namespace}:heldp"

    @property
    def restore_lock(self) -> str:
        return f"{self.namespace}:restoring"


def decoded(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value
