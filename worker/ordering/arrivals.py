"""Jobs joining their keys' queues, in acceptance order, also across a loss of Redis.

The marker `{ns}:synced` says that every job in flight in MongoDB is in its
key's queue. Every enqueue checks it in the same Lua step: without it the job is
held: it is in MongoDB already, it stays out of every queue, and it joins the
`{ns}:held` list in arrival order. So a new job can never overtake an accepted
one that Redis lost. The reconciler notices the missing marker, rebuilds each
key's queue from MongoDB's jobs in flight in acceptance order (`rebuild`), and
then, in one Lua step, appends the held jobs (in arrival order) and sets the
marker: every job enqueued after that step stands behind every held one.
A job already queued is never queued twice (its payload entry says it is there).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.ordering.keys import RedisKeys


class Arrival(Enum):
    HELD = -1  # recorded, not queued: Redis is not in sync with MongoDB (the reconciler queues it, in order)
    QUEUED = 0  # behind a drain message already outstanding
    SEND_DRAIN = 1  # queued on an idle key: the caller sends its drain message


_HOLD_UNLESS_SYNCED = """
if redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('RPUSH', KEYS[6], cjson.encode({id = ARGV[3], keys = {ARGV[1]}}))
  redis.call('HSET', KEYS[7], ARGV[3], ARGV[4])
  return -1
end
if redis.call('HEXISTS', KEYS[4], ARGV[3]) == 1 then return 0 end
"""

# KEYS: queue, sched, keys set, payloads, synced, held list, held payloads. ARGV: key, sent marker, job id, payload.
_ENQUEUE = (
    _HOLD_UNLESS_SYNCED
    + """
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
if redis.call('SET', KEYS[2], ARGV[2], 'NX') then return 1 end
return 0
"""
)

# A transaction joins every queue it touches in one step, so two transactions
# sharing keys stand in the same order in all of them (no deadlock).
# KEYS: payloads, keys set, synced, held list, held payloads, then (queue, sched) per key.
# ARGV: job id, payload, sent marker, then the keys.
_ENQUEUE_TRANSACTION = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  local keys = {}
  for i = 4, #ARGV do table.insert(keys, ARGV[i]) end
  redis.call('RPUSH', KEYS[4], cjson.encode({id = ARGV[1], keys = keys}))
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[2])
  return false
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local send = {}
for i = 4, #ARGV do
  local q, sched = KEYS[(i - 4) * 2 + 6], KEYS[(i - 4) * 2 + 7]
  redis.call('RPUSH', q, ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[i])
  if redis.call('SET', sched, ARGV[3], 'NX') then table.insert(send, ARGV[i]) end
end
return send
"""

# Rebuild one key's queue in acceptance order: the jobs MongoDB holds in flight (already sorted), then whatever
# the queue held that they do not include. Only while no drain holds the key.
# KEYS: queue, sched, keys set, payloads, lease. ARGV: key, sent marker, then (job id, payload) pairs.
_REBUILD = """
if redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
local listed, order = {}, {}
for i = 3, #ARGV - 1, 2 do
  listed[ARGV[i]] = true
  table.insert(order, ARGV[i])
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
end
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if not listed[id] then table.insert(order, id) end
end
redis.call('DEL', KEYS[1])
for _, id in ipairs(order) do redis.call('RPUSH', KEYS[1], id) end
if #order == 0 then return 0 end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


# The end of a restore: append the held jobs not queued yet, in arrival order, and set the marker, in one step.
# KEYS: payloads, keys set, synced, held list, held payloads. ARGV: sent marker, namespace.
_SYNC = """
local send = {}
for _, item in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  local held = cjson.decode(item)
  if redis.call('HEXISTS', KEYS[1], held.id) == 0 then
    local payload = redis.call('HGET', KEYS[5], held.id)
    if payload then
      redis.call('HSET', KEYS[1], held.id, payload)
      for _, key in ipairs(held.keys) do
        redis.call('RPUSH', ARGV[2] .. ':q:' .. key, held.id)
        redis.call('SADD', KEYS[2], key)
        if redis.call('SET', ARGV[2] .. ':sched:' .. key, ARGV[1], 'NX') then table.insert(send, key) end
      end
    end
  end
end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('SET', KEYS[3], 1)
return send
"""


def sent_marker(now: float) -> str:
    """The `sched` value of a drain message sent at `now` and not yet taken by a worker."""
    return f"s:{now}"


@translating(RedisError, "Redis")
class Arrivals:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self._keys = keys
        self._enqueue = client.register_script(_ENQUEUE)
        self._enqueue_transaction = client.register_script(_ENQUEUE_TRANSACTION)
        self._rebuild = client.register_script(_REBUILD)
        self._sync = client.register_script(_SYNC)

    def _enqueue_keys(self, key: str) -> list[str]:
        k = self._keys
        return [k.queue(key), k.sched(key), k.keys_set, k.payloads, k.synced, k.held, k.held_payloads]

    def enqueue(self, key: str, job_id: str, payload: str, now: float, count: bool = True) -> Arrival:
        """Append a job to the key's queue (unless Redis is out of sync: then it is held), and with `count` count
        it accepted in the service's metrics: one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        self._enqueue(keys=self._enqueue_keys(key), args=[key, sent_marker(now), job_id, payload], client=pipe)
        if count:
            pipe.hincrby(self._keys.counts, "accepted", 1)
        return Arrival(int(pipe.execute()[0]))

    def enqueue_many(self, jobs: list[tuple[str, str, str]], now: float) -> tuple[list[str], bool]:
        """Append (key, job id, payload) in order, one round trip: (the keys that need a drain message, held)."""
        pipe = self._redis.pipeline(transaction=False)
        for key, job_id, payload in jobs:
            self._enqueue(keys=self._enqueue_keys(key), args=[key, sent_marker(now), job_id, payload], client=pipe)
        arrivals = [Arrival(int(flag)) for flag in pipe.execute()]
        keys = list(dict.fromkeys(key for (key, _, _), arrival in zip(jobs, arrivals) if arrival is Arrival.SEND_DRAIN))
        return keys, any(arrival is Arrival.HELD for arrival in arrivals)

    def enqueue_transaction(self, keys: list[str], job_id: str, payload: str, now: float) -> list[str] | None:
        """Queue a transaction on all its keys at once: the keys that need a drain message, or None when held."""
        k = self._keys
        redis_keys = [k.payloads, k.keys_set, k.synced, k.held, k.held_payloads] + [
            x for key in keys for x in (k.queue(key), k.sched(key))
        ]
        sent = self._enqueue_transaction(keys=redis_keys, args=[job_id, payload, sent_marker(now), *keys])
        return None if sent is None else [v.decode() if isinstance(v, bytes) else str(v) for v in sent]

    def rebuild(self, key: str, jobs: list[tuple[str, str]], now: float) -> bool | None:
        """Put the key's jobs in flight (in acceptance order) first in its queue; True when a drain message must be
        sent, None when a drain holds the key now (try again later)."""
        k = self._keys
        flat: list[Any] = [part for pair in jobs for part in pair]
        reply = int(
            self._rebuild(
                keys=[k.queue(key), k.sched(key), k.keys_set, k.payloads, k.lease(key)],
                args=[key, sent_marker(now), *flat],
            )
        )
        return None if reply < 0 else bool(reply)

    def synced(self) -> bool:
        return bool(self._redis.exists(self._keys.synced))

    def finish_sync(self, now: float) -> list[str]:
        """Append the held jobs (arrival order) and set the marker, in one step; the keys that need a drain message."""
        k = self._keys
        sent = self._sync(
            keys=[k.payloads, k.keys_set, k.synced, k.held, k.held_payloads], args=[sent_marker(now), k.namespace]
        )
        return [v.decode() if isinstance(v, bytes) else str(v) for v in sent]

    def queued(self, job_id: str) -> bool:
        return bool(self._redis.hexists(self._keys.payloads, job_id))

    def not_queued(self, job_ids: list[str]) -> list[str]:
        """Those of `job_ids` that no queue holds (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hexists(self._keys.payloads, job_id)
        return [job_id for job_id, there in zip(job_ids, pipe.execute()) if not there]
