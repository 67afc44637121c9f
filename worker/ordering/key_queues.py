"""The Redis side of the service, bound to one namespace: the key schedule and the parts beside it.

- `schedule`: the life of each resource key: queues, leases, marks, the ready list (worker/schedule/);
- `copies`: the copy of each resource's newest version (copies.py);
- `counters`: service counts, group progress, callback marks (counters.py);
- `wakeups`: the channel the API waits on (wakeups.py).
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.ordering.copies import NewestCopies
from worker.ordering.counters import Counters
from worker.ordering.wakeups import Wakeups
from worker.schedule.keys import RedisKeys
from worker.schedule.redis_schedule import RedisSchedule
from worker.schedule.replication import ASYNCHRONOUS, Replication


@translating(RedisError, "Redis")
class KeyQueues:
    """The Redis side of per-key ordering, bound to one namespace."""

    def __init__(self, client: redis.Redis, namespace: str, replication: Replication = ASYNCHRONOUS) -> None:
        self._redis = client
        self.keys = RedisKeys(namespace)
        self.schedule = RedisSchedule(client, self.keys, replication)
        self.copies = NewestCopies(client, self.keys)
        self.counters = Counters(client, self.keys)
        self.wakeups = Wakeups(client, self.keys)

    def ping(self) -> None:
        self._redis.ping()
