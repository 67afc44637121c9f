"""`KeySchedule` on Redis: each transition one Lua script of lua/ (or one plain command), named arguments.

Every step that reads and then writes runs as one script, so an arrival and the end of a drain can never both
decide that the other will offer the key (no lost wake-up, no duplicate drain). Key names come from keys.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.schedule.keys import KEEP_SECONDS, RedisKeys, decoded, realm_of
from worker.schedule.port import (
    MOST_ITEMS_PER_TAKE,
    Arrival,
    Claimed,
    DrainerLimits,
    Finished,
    Heads,
    Step,
    distinct_items,
)
from worker.schedule.replication import ASYNCHRONOUS, ReplicatedWrites, Replication
from worker.schedule.replies import heads, lease_ms, leaving_args, texts
from worker.schedule.scripts import scripts
from worker.schedule.states import KeyView, Mark, taken_prefix

_SCRIPTS = (
    "arrive",
    "arrive_transaction",
    "claim",
    "settle",
    "rebuild",
    "finish_sync",
    "offer",
    "take",
    "next",
    "release",
    "untake",
    "take_over",
    "retry",
    "hold",
    "park",
    "complete_transaction",
)


@translating(RedisError, "Redis")
class RedisSchedule:
    """The key schedule of one namespace (and tenant) in Redis."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, replication: Replication = ASYNCHRONOUS) -> None:
        self._redis = client
        self.keys = keys
        self._lua = scripts(client, *_SCRIPTS)
        self._writes = ReplicatedWrites(replication)  # arrivals wait for replicas (replication.py)

    # intake

    def _sync_keys(self, realm: str) -> dict[str, str]:
        """The keys every arrival and the end of a restore touch: where jobs are queued or held, and the realm's
        marker."""
        k = self.keys
        return {
            "active": k.keys_set,
            "payloads": k.payloads,
            "synced": k.synced(realm),
            "held": k.held(realm),
            "held_payloads": k.held_payloads(realm),
        }

    def _arrive_keys(self, key: str) -> dict[str, str]:
        k = self.keys
        return {**self._sync_keys(realm_of(key)), "queue": k.queue(key), "mark": k.mark(key), "counts": k.counts}

    def arrive(self, key: str, job_id: str, payload: str, now: float) -> Arrival:
        """Queue a job on its key and count it accepted (held while Redis is out of sync; never twice)."""
        args = {"key": key, "offered": Mark.offered(now).encode(), "job": job_id, "payload": payload}
        if not self._writes.replication.replicas:  # one call, not a pipeline (which checks its scripts first)
            return Arrival(int(self._lua["arrive"](self._arrive_keys(key), args)))
        pipe = self._redis.pipeline(transaction=False)
        self._lua["arrive"](self._arrive_keys(key), args, client=pipe)
        return Arrival(int(self._writes.execute(pipe)[0]))

    def arrive_many(self, jobs: list[tuple[str, str, str]], now: float) -> tuple[list[str], bool]:
        """`arrive` for (key, job id, payload) in order, one round trip: (the keys to offer, any held)."""
        pipe = self._redis.pipeline(transaction=False)
        offered = Mark.offered(now).encode()
        for key, job_id, payload in jobs:
            args = {"key": key, "offered": offered, "job": job_id, "payload": payload}
            self._lua["arrive"](self._arrive_keys(key), args, client=pipe)
        arrivals = [Arrival(int(flag)) for flag in self._writes.execute(pipe)]
        keys = [key for (key, _, _), arrival in zip(jobs, arrivals) if arrival is Arrival.SEND_DRAIN]
        return list(dict.fromkeys(keys)), any(arrival is Arrival.HELD for arrival in arrivals)

    def arrive_transaction(self, keys: list[str], job_id: str, payload: str, now: float) -> list[str] | None:
        """Queue a transaction on all its keys at once: the keys to offer, or None when held."""
        k = self.keys
        named = {**self._sync_keys(realm_of(keys[0])), "counts": k.counts}  # a transaction is one tenant's
        pairs = [x for key in keys for x in (k.queue(key), k.mark(key))]
        args = {"job": job_id, "payload": payload, "offered": Mark.offered(now).encode()}
        pipe = self._redis.pipeline(transaction=False)
        self._lua["arrive_transaction"](named, args, more_keys=pairs, more_args=keys, client=pipe)
        offer = self._writes.execute(pipe)[0]
        return None if offer is None else texts(offer)

    def queued(self, job_id: str) -> bool:
        return bool(self._redis.hexists(self.keys.payloads, job_id))

    def not_queued(self, job_ids: list[str]) -> list[str]:
        """Those of `job_ids` that no queue holds (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hexists(self.keys.payloads, job_id)
        return [job_id for job_id, there in zip(job_ids, pipe.execute()) if not there]

    def claim(self, key: str, token: str, lease_seconds: float, now: float) -> Claimed | None:
        """Take an idle key for a synchronous request that applies its own job (claim.lua); None: not idle."""
        k = self.keys
        keys = {"lease": k.lease(key), "queue": k.queue(key), "mark": k.mark(key), "copy": k.copy(key)}
        args = {"token": token, "lease_ms": lease_ms(lease_seconds), "offered": Mark.offered(now).encode()}
        reply = self._lua["claim"]({**keys, "synced": k.synced(realm_of(key))}, args)
        return Claimed(decoded(reply[1]) if len(reply) > 1 else None) if int(reply[0]) else None

    def settle(self, key: str, token: str, done: Finished, now: float, copy: tuple[int, str] | None = None) -> bool:
        """Keep the copy of the version a claimed job wrote, count the job and give its key up; True when jobs
        arrived meanwhile (the caller offers it)."""
        k = self.keys
        keys = {"lease": k.lease(key), "queue": k.queue(key), "mark": k.mark(key), "active": k.keys_set}
        counted = {"counts": k.counts, "latency": k.latency, "unfinished": k.unfinished, "copy": k.copy(key)}
        _, outcome, bucket, seconds, _, _ = leaving_args(done)
        args = {"token": token, "key": key, "offered": Mark.offered(now).encode(), "outcome": outcome}
        version, doc = copy or ("", "")
        kept = {"version": version, "doc": doc, "keep_seconds": KEEP_SECONDS, "bucket": bucket, "seconds": seconds}
        return bool(self._lua["settle"]({**keys, **counted}, {**args, **kept}))

    # delivery

    def offer(self, items: list[str], now: float, limits: DrainerLimits) -> list[str]:
        """Push `items` (may be none) after the retries now due; the new drainers to start (one message each)."""
        k = self.keys
        keys = {"ready": k.ready, "drainers": k.drainers, "seq": k.drainer_seq, "due": k.due}
        args = {"now": now, "stale_before": now - limits.stale_seconds, "cap": limits.cap}
        return texts(self._lua["offer"](keys, args, more_args=items))

    def take(
        self, drainer: str, worker: str, now: float, mode: str = "pull", item: str | None = None
    ) -> list[list[str]]:
        """The next items for `drainer` (`item`, popped by `wait`, first), each the list of its keys, marked taken
        by `worker`; [] when none waits (mode "retire": the drainer then stops counting). A key offered twice
        comes once (in a transaction's item, if one holds it)."""
        k = self.keys
        keys = {
            "ready": k.ready,
            "drainers": k.drainers,
            "items_key": k.drainer_items,
            "counts": k.counts,
            "due": k.due,
        }
        args = {
            "drainer": drainer,
            "now": now,
            "taken": Mark.taken(worker, now).encode(),
            "prefix": k.own_prefix,
            "mode": mode,
            "given": item or "",
            "most": MOST_ITEMS_PER_TAKE,
        }
        got = self._lua["take"](keys, args)
        if not got:
            return []
        return distinct_items([line.split() for line in decoded(got).split("\n")])

    def wait(self, seconds: float) -> str | None:
        """Block up to `seconds` for the next item (then `take` it with that item)."""
        got = self._redis.blpop([self.keys.ready], timeout=seconds)
        return decoded(got[1]) if got else None

    def hand_over(self, drainer: str, now: float) -> None:
        """`drainer` goes on from a new message: nothing to resume, and it keeps its place in the count."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hdel(self.keys.drainer_items, drainer)
        pipe.zadd(self.keys.drainers, {drainer: now})
        pipe.execute()

    def resumed(self, drainer: str) -> list[str]:
        """The keys `drainer` was draining when its process died (its message came back); [] for a new one."""
        item = self._redis.hget(self.keys.drainer_items, drainer)
        return decoded(item).split() if item else []

    def waiting(self) -> int:
        return int(self._redis.llen(self.keys.ready))

    def taken(self, keys: list[str], worker: str, now: float) -> None:
        """A worker process took `keys` to drain (only keys that owe a drain); counted as drains."""
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(self.keys.mark(key), Mark.taken(worker, now).encode(), xx=True)
        pipe.hincrby(self.keys.counts, "drains", len(keys))
        pipe.execute()

    def untake(self, key: str, worker: str) -> None:
        """Another holds the lease: no drain of this process stands for the key any more."""
        self._lua["untake"]({"mark": self.keys.mark(key)}, {"taken_prefix": taken_prefix(worker)})

    def reoffer(self, key: str, now: float) -> None:
        """`key` is being offered again (its item is pushed next)."""
        self._redis.set(self.keys.mark(key), Mark.offered(now).encode())

    def retry(self, key: str, due: float) -> None:
        """A drain of `key` failed: offered again at `due` (a due-time entry, moved by `offer` and `take`)."""
        args = {"key": key, "retrying": Mark.retrying(due).encode(), "at": due}
        self._lua["retry"]({"mark": self.keys.mark(key), "due": self.keys.due}, args)

    def next_due(self) -> float | None:
        """When the earliest retry is due (None: none is waiting)."""
        first = self._redis.zrange(self.keys.due, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    # drain

    @staticmethod
    def new_token(holder: str) -> str:
        """A lease token naming its `holder` (host:pid)."""
        return f"{holder}|{secrets.token_hex(12)}"

    def next_jobs(self, steps: list[Step], lease_seconds: float, limit: int) -> list[Heads | None]:
        """Each step: take the lease (`acquire`) or check it; take its finished jobs off and count them; release
        the lease and mark if the queue is empty (Heads with no jobs), else peek up to `limit` next jobs. None:
        the lease was lost (or, acquiring, someone holds it). One round trip for all the steps."""
        pipe = self._redis.pipeline(transaction=False)
        for step in steps:
            keys, args, finished = self._next_call(step, lease_seconds, limit)
            self._lua["next"](keys, args, more_args=finished, client=pipe)
        return [heads(reply) for reply in pipe.execute()]

    def _next_call(
        self, step: Step, lease_seconds: float, limit: int
    ) -> tuple[dict[str, str], dict[str, Any], list[Any]]:
        k, key = self.keys, step.key
        keys = {
            "lease": k.lease(key),
            "queue": k.queue(key),
            "payloads": k.payloads,
            "copy": k.copy(key),
            "counts": k.counts,
            "latency": k.latency,
            "unfinished": k.unfinished,
            "mark": k.mark(key),
            "active": k.keys_set,
        }
        args = {
            "token": step.token,
            "lease_ms": lease_ms(lease_seconds),
            "limit": limit,
            "group_prefix": k.group(""),
            "mode": "acquire" if step.acquire else "renew",
            "key": key,
        }
        return keys, args, [part for done in step.finished for part in leaving_args(done)]

    def release(self, key: str, token: str) -> bool:
        """Give the lease up; True when jobs remain and the key must be offered again."""
        k = self.keys
        keys = {"lease": k.lease(key), "queue": k.queue(key), "mark": k.mark(key), "active": k.keys_set}
        return bool(self._lua["release"](keys, {"token": token, "key": key}))

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
        args = {"previous": previous, "token": token, "lease_ms": lease_ms(lease_seconds)}
        return token if self._lua["take_over"]({"lease": self.keys.lease(key)}, args) else None

    def head(self, key: str) -> tuple[str | None, str | None]:
        """The job at the head of the key's queue and its payload copy."""
        job_id = self._redis.lindex(self.keys.queue(key), 0)
        if job_id is None:
            return None, None
        payload = self._redis.hget(self.keys.payloads, job_id)
        return decoded(job_id), decoded(payload) if payload is not None else None

    def attempt(self, job_id: str, cause: str) -> int:
        """Count a failed attempt at a job, once per `cause` (kept a day); the count so far."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.sadd(self.keys.attempts(job_id), cause)
        pipe.expire(self.keys.attempts(job_id), 86_400)
        pipe.scard(self.keys.attempts(job_id))
        return int(pipe.execute()[2])

    def heartbeat(self, worker: str, seconds: float) -> None:
        self._redis.set(self.keys.alive(worker), 1, px=lease_ms(seconds))

    def alive(self, worker: str) -> bool:
        return bool(self._redis.exists(self.keys.alive(worker)))

    # transactions

    def hold(self, keys: list[str], token: str, job_id: str, lease_seconds: float) -> bool:
        """Take every key's lease for the transaction, if it heads all their queues and none is held elsewhere."""
        pairs = [x for key in keys for x in (self.keys.lease(key), self.keys.queue(key))]
        args = {"token": token, "job": job_id, "lease_ms": lease_ms(lease_seconds)}
        return bool(self._lua["hold"]({}, args, more_keys=pairs))

    def park(self, key: str, token: str) -> None:
        self._lua["park"]({"lease": self.keys.lease(key), "mark": self.keys.mark(key)}, {"token": token})

    def complete_transaction(self, keys: list[str], token: str, done: Finished, now: float) -> list[str]:
        """Take the transaction off all its queues, count it, release the leases; the keys to offer again."""
        k = self.keys
        named = {
            "payloads": k.payloads,
            "counts": k.counts,
            "latency": k.latency,
            "unfinished": k.unfinished,
            "active": k.keys_set,
        }
        triples = [x for key in keys for x in (k.lease(key), k.queue(key), k.mark(key))]
        _, outcome, bucket, seconds, _, client = leaving_args(done)
        args = {
            "token": token,
            "job": done.job_id,
            "outcome": outcome,
            "bucket": bucket,
            "seconds": seconds,
            "client": client,
            "offered": Mark.offered(now).encode(),
        }
        return texts(self._lua["complete_transaction"](named, args, more_keys=triples, more_args=keys))

    # recovery

    def view(self, key: str) -> KeyView:
        pipe = self._redis.pipeline(transaction=False)
        pipe.llen(self.keys.queue(key))
        pipe.pttl(self.keys.lease(key))  # -2: no lease
        pipe.get(self.keys.mark(key))
        depth, left_ms, mark = pipe.execute()
        mark_read = Mark.decode(decoded(mark) if mark else None)
        return KeyView(int(depth), int(left_ms) != -2, mark_read, max(0, int(left_ms)) / 1000)

    def depths(self, keys: list[str]) -> list[int]:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.llen(self.keys.queue(key))
        return [int(depth) for depth in pipe.execute()] if keys else []

    def active_keys(self) -> Iterator[str]:
        for member in self._redis.sscan_iter(self.keys.keys_set, count=1000):
            yield decoded(member)

    def synced(self, realm: str) -> bool:
        return bool(self._redis.exists(self.keys.synced(realm)))

    def served_since(self, now: float) -> float:
        """The server's run id against the one recorded (replicated, so a promoted replica holds its old master's):
        when they differ, this server is new here, and since `now`."""
        run_id = str(self._redis.info("server")["run_id"])
        recorded = self._redis.hgetall(self.keys.server)
        if decoded(recorded.get(b"run_id", b"")) == run_id:
            return float(recorded.get(b"since", 0.0))
        self._redis.hset(self.keys.server, mapping={"run_id": run_id, "since": now if recorded else 0.0})
        return now if recorded else 0.0

    def drainers_gone_before(self, since: float) -> None:
        self._redis.zremrangebyscore(self.keys.drainers, "-inf", f"({since}")

    def rebuild(self, key: str, jobs: list[tuple[str, str]], now: float) -> bool | None:
        """Put the key's jobs in flight (in acceptance order) first in its queue; True when it must be offered,
        None when a drain holds the key now (try again later)."""
        k = self.keys
        keys = {"queue": k.queue(key), "mark": k.mark(key), "active": k.keys_set, "payloads": k.payloads}
        flat = [part for pair in jobs for part in pair]
        args = {"key": key, "offered": Mark.offered(now).encode()}
        reply = int(self._lua["rebuild"]({**keys, "lease": k.lease(key)}, args, more_args=flat))
        return None if reply < 0 else bool(reply)

    def finish_sync(self, realm: str, now: float) -> list[str]:
        """Append the realm's held jobs (arrival order) and set its marker, in one step; the keys to offer."""
        args = {"offered": Mark.offered(now).encode(), "prefix": self.keys.own_prefix}
        return texts(self._lua["finish_sync"](self._sync_keys(realm), args))

    def lock(self, name: str, milliseconds: int) -> bool:
        """Take a deployment-wide lock (the reconciler's pass, the rebuild after a loss); False when held."""
        return bool(self._redis.set(name, secrets.token_hex(8), nx=True, px=milliseconds))

    def unlock(self, name: str) -> None:
        self._redis.delete(name)
