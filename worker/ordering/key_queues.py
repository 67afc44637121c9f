"""Per-resource ordering in Redis, one part per concern, all naming their keys through keys.py.

- `arrivals`: jobs joining their queues, in acceptance order, also across a loss of Redis (arrivals.py);
- `leases`: the queues, their leases and drain marks (leases.py);
- `ready`: keys ready for a drain, and the drainers that pull them (ready.py);
- `holds`: transactions holding several keys at once (holds.py);
- `copies`: the copy of each resource's newest version (copies.py);
- `counters`: service counts, group progress, callback marks (counters.py);
- `wakeups`: the channel the API waits on (wakeups.py).
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.ordering.arrivals import Arrivals
from worker.ordering.copies import NewestCopies
from worker.ordering.counters import Counters
from worker.ordering.holds import TransactionHolds
from worker.ordering.keys import RedisKeys
from worker.ordering.leases import Leases
from worker.ordering.ready import ReadyKeys
from worker.ordering.wakeups import Wakeups


@translating(RedisError, "Redis")
class KeyQueues:
    """The Redis side of per-key ordering, bound to one namespace."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._redis = client
        self.keys = RedisKeys(namespace)
        self.arrivals = Arrivals(client, self.keys)
        self.leases = Leases(client, self.keys)
        self.ready = ReadyKeys(client, self.keys)
        self.holds = TransactionHolds(client, self.keys)
        self.copies = NewestCopies(client, self.keys)
        self.counters = Counters(client, self.keys)
        self.wakeups = Wakeups(client, self.keys)

    def ping(self) -> None:
        self._redis.ping()
