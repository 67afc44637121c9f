"""Backpressure: how many accepted jobs are not finished yet, per client and in all, kept in Redis.

`reserve` admits up to n more jobs under both limits in one atomic step (a
Lua script, so concurrent intakes cannot overshoot). A job gives its place back
where it leaves its queue (worker/schedule/lua/next.lua and complete_transaction.lua
decrement the same hash, through `give_back` in prelude.lua), which happens exactly once per job. If Redis
loses the hash the counts restart from zero: the limits then admit more for a
while, they never refuse forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.errors import ServiceBusy, TooManyUnfinished
from worker.schedule.keys import RedisKeys, client_field
from worker.schedule.scripts import scripts

# Fields of the hash besides the clients' (named so in worker/schedule/lua/prelude.lua and reserve.lua too).
TOTAL = "total"
PROGRESS = "progress"  # when a job last left its queue (or the service last turned busy): Redis server time, seconds


@dataclass(frozen=True)
class Granted:
    count: int
    client_unfinished: int
    total_unfinished: int


@translating(RedisError, "Redis")
class Admission:
    def __init__(self, client: redis.Redis, namespace: str, per_client: int, total: int) -> None:
        self._redis = client
        self.hash = RedisKeys(namespace).unfinished
        self._per_client = per_client
        self._total = total
        self._lua = scripts(client, "reserve", "give_back")

    def reserve(self, client: str, wanted: int) -> Granted:
        """Admit up to `wanted` jobs of `client` (0 when either limit is reached)."""
        if wanted <= 0:
            return Granted(0, 0, 0)
        args = {"client": client_field(client), "wanted": wanted, "per_client": self._per_client, "total": self._total}
        reply: Any = self._lua["reserve"]({"unfinished": self.hash}, args)
        return Granted(int(reply[0]), int(reply[1]), int(reply[2]))

    def release(self, client: str, count: int) -> None:
        """Give back places reserved for jobs that were not accepted after all (idempotent repeats, failures)."""
        if count > 0:
            self._lua["give_back"]({"unfinished": self.hash}, {"client": client_field(client), "n": count})

    def refusal(self, granted: Granted, client: str, wanted: int) -> TooManyUnfinished | ServiceBusy:
        """The error for a reservation that fell short: 503 when the service-wide limit is the tighter one, else 429."""
        if self._total - granted.total_unfinished < self._per_client - granted.client_unfinished:
            return ServiceBusy(
                f"The service has {granted.total_unfinished} jobs not yet finished (limit {self._total}); retry later",
                "request",
            )
        return TooManyUnfinished(
            f"Client {client!r} has {granted.client_unfinished} jobs not yet finished (limit "
            f"{self._per_client}); retry later",
            "request",
        )

    def stalled_for(self) -> tuple[int, float]:
        """(jobs not finished, seconds since one last finished); 0 seconds when nothing is waiting."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self.hash, [TOTAL, PROGRESS])
        pipe.time()
        (total, progress), (now, _) = pipe.execute()
        waiting = int(total or 0)
        return waiting, (max(0.0, float(now) - float(progress or now)) if waiting else 0.0)

    def admit(self, client: str, wanted: int) -> None:
        """All `wanted` or nothing: raise the refusal (and reserve nothing) when they do not all fit."""
        granted = self.reserve(client, wanted)
        if granted.count < wanted:
            self.release(client, granted.count)
            raise self.refusal(granted, client, wanted)
