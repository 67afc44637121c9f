"""Per-resource FIFO queues and their leases in Redis: who drains a key, and what it takes off the queue.

For each resource key:

- `{ns}:q:{key}`      list of job ids in the order the API accepted them. A job
                      stays at the head while it runs and is removed only
                      after its outcome is recorded, so a worker that dies
                      leaves it for the next lease holder.
- `{ns}:lease:{key}`  the lease: a token `holder|random` with an expiry. Only its
                      holder drains the key; it renews between jobs. A paused
                      worker loses it after `lease_seconds`; the MongoDB
                      compare-and-set then refuses its late write (fencing).
- `{ns}:sched:{key}`  set while a drain of the key is outstanding, so one
                      drain serves any number of jobs queued behind.
                      `s:<time>`: offered, waiting on the ready list (ready.py)
                      or for a retry; `t:<worker>:<time>`: taken by that worker
                      process (the reconciler revives a key only when neither
                      can be true any more: see reconciler.py).
- `{ns}:alive:{worker}` a worker process's heartbeat (expires after a lease).
- `{ns}:keys`         the keys with queued jobs, for the reconciler.
- `{ns}:payload`      job id -> a copy of the job's request (MongoDB holds the original).

Every step that reads and then writes runs as one Lua script, so an enqueue
and the end of a drain can never both decide that the other will send the
next drain message (no lost wake-up, no duplicate drain). Key names come from
keys.py, the one owner of the schema.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.ordering.admission import RELEASE_LUA, client_field
from worker.ordering.arrivals import sent_marker
from worker.ordering.keys import RedisKeys, decoded
from worker.ordering.metrics import latency_bucket

# One round trip per step: take the lease (the first step) or check it, take the
# finished jobs off the head and count them (taking a job off its queue happens
# exactly once, so the counters move here: a worker killed between recording an
# outcome and counting it cannot skew them), give their places back to admission
# control (worker/ordering/admission.py); then, if the queue is empty, release the
# lease and the key's drain mark (the drain ends in this same step), else renew the
# lease and return up to `limit` next jobs with their payloads and the copy of the
# newest version.
# KEYS: lease, queue, payloads, newest copy, counts, latency, unfinished, sched, keys set.
# ARGV: token, lease ms, limit, group-counter prefix, mode ('acquire' or 'renew'), key, then per finished job: id,
# outcome, bucket, seconds, group, client field.
# Reply: {-2} held by another (acquire), {-1} lease lost, {0} queue empty and released, {1, copy, id, payload, ...}.
_NEXT = (
    RELEASE_LUA
    + """
if ARGV[5] == 'acquire' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-2} end
elseif redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {-1}
end
local i = 7
while i + 5 <= #ARGV do
  local id = ARGV[i]
  if redis.call('LINDEX', KEYS[2], 0) == id then
    redis.call('LPOP', KEYS[2])
    redis.call('HDEL', KEYS[3], id)
    local outcome = ARGV[i + 1]
    if outcome ~= '' then
      redis.call('HINCRBY', KEYS[5], outcome, 1)
      redis.call('HINCRBY', KEYS[6], ARGV[i + 2], 1)
      redis.call('HINCRBYFLOAT', KEYS[6], 'sum', ARGV[i + 3])
      if ARGV[i + 4] ~= '' then redis.call('HINCRBY', ARGV[4] .. ARGV[i + 4], outcome, 1) end
      if ARGV[i + 5] ~= '' then give_back(KEYS[7], ARGV[i + 5], 1) end
    end
  end
  i = i + 6
end
if redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[8])
  redis.call('SREM', KEYS[9], ARGV[6])
  return {0}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local reply = {1, redis.call('HGET', KEYS[4], 'doc')}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[3]) - 1)) do
  table.insert(reply, id)
  table.insert(reply, redis.call('HGET', KEYS[3], id))
end
return reply
"""
)


# Release the lease; if jobs remain the caller must offer the key again (the
# `sched` flag stays set), else the key is idle and the flag goes.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('LLEN', KEYS[2]) > 0 then return 1 end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[2])
return 0
"""


# Forget this process's "taken" mark on a key (only if the mark is still ours).
_UNTAKE = """
local mark = redis.call('GET', KEYS[1])
if mark and string.sub(mark, 1, string.len(ARGV[1])) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


# Take a dead holder's lease: only if it still holds it. KEYS: lease. ARGV: its token, the new token, lease ms.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
return 1
"""


@dataclass(frozen=True)
class Finished:
    """A job leaving its queue: its outcome (applied, failed, cancelled; empty: not counted) and seconds since
    accept."""

    job_id: str
    outcome: str
    seconds: float
    group: str = ""
    client: str = ""  # whose unfinished-job count it leaves ('' when none)


@dataclass(frozen=True)
class Heads:
    """The first jobs of a key's queue (job id, payload copy), and the copy of the resource's newest version; no
    jobs: the queue was empty, and the lease and drain mark were released in the same step."""

    cached_newest: str | None
    jobs: list[tuple[str, str | None]]

    @property
    def released(self) -> bool:
        return not self.jobs


@dataclass(frozen=True)
class Step:
    """One key's drain step: its lease token, the jobs that ended (to take off and count), and whether the step
    takes the lease (the first) or renews it."""

    key: str
    token: str
    finished: list[Finished]
    acquire: bool = False

    @property
    def mode(self) -> str:
        return "acquire" if self.acquire else "renew"


def _heads(reply: list[Any]) -> Heads | None:
    if int(reply[0]) < 0:
        return None
    parts = [decoded(p) if p is not None else None for p in reply[1:]]
    pairs = [(str(parts[i]), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    return Heads(parts[0] if parts else None, pairs)


@dataclass(frozen=True)
class KeyState:
    """What the reconciler needs to know of a key: queued jobs, whether a drain holds it, its drain message."""

    depth: int
    leased: bool
    message: str | None  # `s:<time>`, `t:<worker>:<time>`, or None when no drain message is outstanding

    @property
    def taken_by(self) -> str | None:
        return self.message[2:].rsplit(":", 1)[0] if self.message and self.message.startswith("t:") else None

    @property
    def since(self) -> float:
        try:
            return float((self.message or "").rsplit(":", 1)[-1])
        except ValueError:
            return 0.0


@translating(RedisError, "Redis")
class Leases:
    """Queues, leases and drain messages of resource keys, bound to one namespace."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self.keys = keys
        self._next = client.register_script(_NEXT)
        self._release = client.register_script(_RELEASE)
        self._untake = client.register_script(_UNTAKE)
        self._take_over = client.register_script(_TAKE_OVER)

    @staticmethod
    def new_token(holder: str) -> str:
        """A lease token naming its `holder` (host:pid), for `next_jobs(acquire=True)`."""
        return f"{holder}|{secrets.token_hex(12)}"

    def lease_holder(self, key: str) -> tuple[str, str] | None:
        """(holder, token) of the key's lease, or None when it is free."""
        token = self._redis.get(self.keys.lease(key))
        if token is None:
            return None
        text = decoded(token)
        return text.split("|", 1)[0], text

    def take_over(self, key: str, previous: str, lease_seconds: float, holder: str) -> str | None:
        """Take the lease from a holder known to be dead, if it still holds it (compare-and-set on its token)."""
        token = self.new_token(holder)
        return (
            token
            if self._take_over(keys=[self.keys.lease(key)], args=[previous, token, max(1, int(lease_seconds * 1000))])
            else None
        )

    def release(self, key: str, token: str) -> bool:
        """Give the lease up; True when jobs remain and the key must be offered again."""
        return bool(
            self._release(
                keys=[self.keys.lease(key), self.keys.queue(key), self.keys.sched(key), self.keys.keys_set],
                args=[token, key],
            )
        )

    def next_jobs(
        self, key: str, token: str, lease_seconds: float, finished: list[Finished], limit: int, acquire: bool = False
    ) -> Heads | None:
        """Take the lease with `token` (`acquire`) or check it; complete and count `finished` (in queue order); then
        release the lease and the drain mark if the queue is empty (Heads with no jobs), else renew the lease and
        peek up to `limit` next jobs. None: the lease was lost (or, acquiring, someone holds it).

        The group counters live under a prefix the script extends with each job's group (single-instance Redis)."""
        return self.next_jobs_many([Step(key, token, finished, acquire)], lease_seconds, limit)[0]

    def next_jobs_many(self, steps: list[Step], lease_seconds: float, limit: int) -> list[Heads | None]:
        """`next_jobs` for the steps of several keys, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for step in steps:
            keys, args = self._next_call(step, lease_seconds, limit)
            self._next(keys=keys, args=args, client=pipe)
        return [_heads(reply) for reply in pipe.execute()]

    def _next_call(self, step: Step, lease_seconds: float, limit: int) -> tuple[list[str], list[Any]]:
        k, key = self.keys, step.key
        args: list[Any] = [step.token, max(1, int(lease_seconds * 1000)), limit, k.group(""), step.mode, key]
        for done in step.finished:
            args += [
                done.job_id,
                done.outcome,
                latency_bucket(done.seconds),
                done.seconds,
                done.group,
                client_field(done.client) if done.client else "",
            ]
        keys = [k.lease(key), k.queue(key), k.payloads, k.copy(key), k.counts, k.latency, k.unfinished]
        return [*keys, k.sched(key), k.keys_set], args

    def head(self, key: str) -> tuple[str | None, str | None]:
        """The job at the head of the key's queue and its payload copy."""
        job_id = self._redis.lindex(self.keys.queue(key), 0)
        if job_id is None:
            return None, None
        payload = self._redis.hget(self.keys.payloads, job_id)
        return decoded(job_id), decoded(payload) if payload is not None else None

    def attempt(self, job_id: str, cause: str) -> int:
        """Count a failed attempt at a job, once per `cause` (kept a day); the count so far. A worker that died
        holding a transaction's leases is one attempt, however many of its keys are taken over."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.sadd(self.keys.attempts(job_id), cause)
        pipe.expire(self.keys.attempts(job_id), 86_400)
        pipe.scard(self.keys.attempts(job_id))
        return int(pipe.execute()[2])

    def reschedule(self, key: str, now: float) -> None:
        """`key` is being offered again (or a retry of its drain is sent)."""
        self._redis.set(self.keys.sched(key), sent_marker(now))

    def taken(self, keys: list[str], worker: str, now: float) -> None:
        """A worker process took `keys` to drain (only keys with a drain outstanding); counted as drains in the
        metrics, in the same round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(self.keys.sched(key), f"t:{worker}:{now}", xx=True)
        pipe.hincrby(self.keys.counts, "drains", len(keys))
        pipe.execute()

    def untake(self, key: str, worker: str) -> None:
        """This process took the key but another holds the lease: no drain of ours stands for the key any more
        (the holder offers it again; if the holder died, the reconciler revives it)."""
        self._untake(keys=[self.keys.sched(key)], args=[f"t:{worker}:"])

    def heartbeat(self, worker: str, seconds: float) -> None:
        self._redis.set(self.keys.alive(worker), 1, px=max(1, int(seconds * 1000)))

    def alive(self, worker: str) -> bool:
        return bool(self._redis.exists(self.keys.alive(worker)))

    def state(self, key: str) -> KeyState:
        pipe = self._redis.pipeline(transaction=False)
        pipe.llen(self.keys.queue(key))
        pipe.exists(self.keys.lease(key))
        pipe.get(self.keys.sched(key))
        depth, leased, sched = pipe.execute()
        return KeyState(int(depth), bool(leased), decoded(sched) if sched else None)

    def active_keys(self) -> Iterator[str]:
        for member in self._redis.sscan_iter(self.keys.keys_set, count=1000):
            yield member.decode() if isinstance(member, bytes) else str(member)

    def lock(self, name: str, milliseconds: int) -> bool:
        """Take a deployment-wide lock (the reconciler's pass, the rebuild after a loss); False when held."""
        return bool(self._redis.set(name, secrets.token_hex(8), nx=True, px=milliseconds))

    def unlock(self, name: str) -> None:
        self._redis.delete(name)
