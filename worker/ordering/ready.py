"""Keys ready for a drain, pulled by long-lived drainers: a Celery message per drainer, not per key.

- `{ns}:ready`          list of items waiting for a drainer; an item is one key, or
                        the keys of one transaction joined by spaces (drained in
                        turn by one drainer, so no two contend for its leases). A
                        key is offered only when its `sched` mark was set (one
                        outstanding offer per key, worker/ordering/leases.py).
- `{ns}:drainers`       sorted set: drainer id -> when it last showed life (sent,
                        or pulled). Entries older than `stale` seconds (a drainer
                        whose process died) no longer count.
- `{ns}:drainer-item`   hash: drainer id -> the item it is draining, so a drainer
                        whose message comes back after its process died resumes
                        that item first (and takes the dead holder's lease over).
- `{ns}:drainer-seq`    counter naming new drainers (`d<n>`).

An offer pushes its items and, in the same Lua step, names new drainers while
fewer than `cap` live ones exist (never more than items waiting): the caller
sends one Celery message per name. A drainer pulls items until the list stays
empty for a moment, then retires in one step that either pulls a last item or
removes it from the count, so an offer can never find a drainer counted that
will not look at the list again (no lost wake-up). Under load a few drainers
serve every key and no message is sent at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.ordering.keys import RedisKeys, decoded
from worker.settings import Settings

# KEYS: ready, drainers, seq. ARGV: now, stale before, cap, then the items to push.
_OFFER = """
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
local waiting = redis.call('LLEN', KEYS[1])
if waiting == 0 then return {} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
local want = math.min(tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[2]), waiting)
local names = {}
for _ = 1, want do
  local name = 'd' .. redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[2], ARGV[1], name)
  table.insert(names, name)
end
return names
"""

# Take items: the one given (popped by a blocking wait) and then from the list, up to a fair share of what waits
# (what waits over the live drainers, at most ARGV[7]). Mark their keys taken by this worker process, count the
# drains, remember the keys for a resume. With nothing to take: 'pull' forgets the keys drained last; 'retire'
# also removes the drainer from the count.
# KEYS: ready, drainers, items, counts. ARGV: drainer, now, taken mark, sched prefix, mode, item or '', most.
_TAKE = """
local items = {}
if ARGV[6] ~= '' then table.insert(items, ARGV[6]) end
local share = math.ceil(redis.call('LLEN', KEYS[1]) / math.max(1, redis.call('ZCARD', KEYS[2])))
local want = math.min(tonumber(ARGV[7]) - #items, share)
if #items == 0 then want = math.max(want, 1) end
if want > 0 then
  local popped = redis.call('LPOP', KEYS[1], want)
  if popped then for _, item in ipairs(popped) do table.insert(items, item) end end
end
if #items == 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  if ARGV[5] == 'retire' then
    redis.call('ZREM', KEYS[2], ARGV[1])
  else
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  end
  return false
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
local all = table.concat(items, '\\n')
redis.call('HSET', KEYS[3], ARGV[1], all)
local n = 0
for key in string.gmatch(all, '%S+') do
  redis.call('SET', ARGV[4] .. key, ARGV[3], 'XX')
  n = n + 1
end
redis.call('HINCRBY', KEYS[4], 'drains', n)
return all
"""

MOST_ITEMS_PER_TAKE = 16  # a drainer applies the single jobs of several keys together (worker/service/drain.py)


@dataclass(frozen=True)
class DrainerLimits:
    """How many drainers may live at once (the pool processes of all workers) and when a silent one stops
    counting (its process died: a lease without a sign of life)."""

    cap: int
    stale_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> DrainerLimits:
        """One drainer per pool process of the workers the settings describe; silent for a lease: gone."""
        return cls(max(1, settings.workers * settings.worker_concurrency), max(1.0, settings.lease_seconds))


@translating(RedisError, "Redis")
class ReadyKeys:
    """The list of keys ready for a drain and the drainers that pull it, bound to one namespace."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self._keys = keys
        self._offer = client.register_script(_OFFER)
        self._take = client.register_script(_TAKE)

    def offer(self, items: list[str], now: float, limits: DrainerLimits) -> list[str]:
        """Push `items` (may be none) and name the new drainers to start, while items wait and fewer than the
        cap live: one Celery message is owed per name."""
        k = self._keys
        names = self._offer(
            keys=[k.ready, k.drainers, k.drainer_seq], args=[now, now - limits.stale_seconds, limits.cap, *items]
        )
        return [decoded(name) for name in names]

    def take(
        self, drainer: str, worker: str, now: float, mode: str = "pull", item: str | None = None
    ) -> list[list[str]]:
        """The next items for `drainer` (`item`, popped by `wait`, first), up to its fair share of what waits, each
        the list of its keys, their keys marked taken by `worker`; [] when none waits (mode "retire": the drainer
        then stops counting). A key offered twice comes once (in a transaction's item, if one holds it)."""
        k = self._keys
        args: list[str | float] = [drainer, now, f"t:{worker}:{now}", k.sched(""), mode, item or ""]
        args.append(MOST_ITEMS_PER_TAKE)
        got = self._take(keys=[k.ready, k.drainers, k.drainer_items, k.counts], args=args)
        if not got:
            return []
        items = [line.split() for line in decoded(got).split("\n")]
        grouped = {key for item in items if len(item) > 1 for key in item}
        singles = list(dict.fromkeys(item[0] for item in items if len(item) == 1 and item[0] not in grouped))
        return [[key] for key in singles] + [item for item in items if len(item) > 1]

    def wait(self, seconds: float) -> str | None:
        """Block up to `seconds` for the next item (then `take` it with that item)."""
        got = self._redis.blpop([self._keys.ready], timeout=seconds)
        return decoded(got[1]) if got else None

    def hand_over(self, drainer: str, now: float) -> None:
        """`drainer` goes on from a new message: nothing to resume, and it keeps its place in the count."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hdel(self._keys.drainer_items, drainer)
        pipe.zadd(self._keys.drainers, {drainer: now})
        pipe.execute()

    def resumed(self, drainer: str) -> list[str]:
        """The keys `drainer` was draining when its process died (its message came back); [] for a new one."""
        item = self._redis.hget(self._keys.drainer_items, drainer)
        return decoded(item).split() if item else []

    def waiting(self) -> int:
        """Items waiting for a drainer."""
        return int(self._redis.llen(self._keys.ready))
