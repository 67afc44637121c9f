"""Transactions across keys in Redis: a transaction runs only when it heads every one of its keys' queues.

`hold` takes every key's lease at once (or none), `park` steps a key aside
while its transaction waits for another key, and `complete_transaction` takes
the transaction off all its queues, counts it once and releases the leases.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.ordering.admission import RELEASE_LUA, client_field
from worker.ordering.arrivals import sent_marker
from worker.ordering.keys import RedisKeys, decoded
from worker.ordering.leases import Finished
from worker.ordering.metrics import latency_bucket

# Hold every key of a transaction: only when it heads every queue and no other
# worker holds any of their leases; then all leases are ours (or none are taken).
# KEYS: (lease, queue) per key. ARGV: token, job id, lease ms.
_HOLD = """
for i = 1, #KEYS, 2 do
  local holder = redis.call('GET', KEYS[i])
  if (holder and holder ~= ARGV[1]) or redis.call('LINDEX', KEYS[i + 1], 0) ~= ARGV[2] then return 0 end
end
for i = 1, #KEYS, 2 do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[3]) end
return 1
"""


# Step aside: a transaction heads this queue but cannot run yet. The key keeps its
# jobs but loses its lease and its drain flag; whoever completes the transaction
# (or the reconciler) sends the next drain message.
_PARK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2])
return 1
"""


# Take a transaction off all its queues (counted once) and release their leases;
# the keys that still have jobs come back (their drain flags stay set).
# KEYS: payloads, counts, latency, unfinished, then (lease, queue, sched) per key.
# ARGV: token, job id, outcome, bucket, seconds, keys set, client field, sent marker, keys...
_COMPLETE_TRANSACTION = (
    RELEASE_LUA
    + """
local more = {}
for i = 9, #ARGV do
  local lease, q, sched = KEYS[(i - 9) * 3 + 5], KEYS[(i - 9) * 3 + 6], KEYS[(i - 9) * 3 + 7]
  if redis.call('LINDEX', q, 0) == ARGV[2] then redis.call('LPOP', q) end
  if redis.call('GET', lease) == ARGV[1] then redis.call('DEL', lease) end
  if redis.call('LLEN', q) > 0 then
    redis.call('SET', sched, ARGV[8])
    table.insert(more, ARGV[i])
  else
    redis.call('DEL', sched)
    redis.call('SREM', ARGV[6], ARGV[i])
  end
end
if redis.call('HDEL', KEYS[1], ARGV[2]) == 1 and ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  redis.call('HINCRBYFLOAT', KEYS[3], 'sum', ARGV[5])
  if ARGV[7] ~= '' then give_back(KEYS[4], ARGV[7], 1) end
end
return more
"""
)


@translating(RedisError, "Redis")
class TransactionHolds:
    """The leases of a transaction's keys, taken together."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self.keys = keys
        self._hold = client.register_script(_HOLD)
        self._park = client.register_script(_PARK)
        self._complete_transaction = client.register_script(_COMPLETE_TRANSACTION)

    def hold(self, keys: list[str], token: str, job_id: str, lease_seconds: float) -> bool:
        """Take every key's lease for the transaction `job_id`, if it heads all their queues and none is held
        elsewhere."""
        redis_keys = [k for key in keys for k in (self.keys.lease(key), self.keys.queue(key))]
        return bool(self._hold(keys=redis_keys, args=[token, job_id, max(1, int(lease_seconds * 1000))]))

    def park(self, key: str, token: str) -> None:
        self._park(keys=[self.keys.lease(key), self.keys.sched(key)], args=[token])

    def complete_transaction(self, keys: list[str], token: str, done: Finished) -> list[str]:
        """Take the transaction off all its queues, count it, release the leases; the keys with jobs left."""
        redis_keys = [self.keys.payloads, self.keys.counts, self.keys.latency, self.keys.unfinished]
        redis_keys += [k for key in keys for k in (self.keys.lease(key), self.keys.queue(key), self.keys.sched(key))]
        args: list[Any] = [
            token,
            done.job_id,
            done.outcome,
            latency_bucket(done.seconds),
            done.seconds,
            self.keys.keys_set,
            client_field(done.client) if done.client else "",
            sent_marker(time.time()),
            *keys,
        ]
        return [decoded(k) for k in self._complete_transaction(keys=redis_keys, args=args)]
