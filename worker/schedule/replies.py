"""How redis_schedule.py speaks to its scripts: the arguments it builds and the replies it reads."""

from __future__ import annotations

from typing import Any

from worker.model.latency import latency_bucket
from worker.schedule.keys import client_field, decoded
from worker.schedule.port import Finished, Heads


def texts(values: Any) -> list[str]:
    return [decoded(v) for v in values]


def lease_ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def leaving_args(done: Finished) -> list[Any]:
    """A finished job as next.lua counts it: id, outcome, latency bucket, seconds, group, client field."""
    client = client_field(done.client) if done.client else ""
    return [done.job_id, done.outcome, latency_bucket(done.seconds), done.seconds, done.group, client]


def heads(reply: list[Any]) -> Heads | None:
    if int(reply[0]) < 0:
        return None
    parts = [decoded(p) if p is not None else None for p in reply[1:]]
    pairs = [(str(parts[i]), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    return Heads(parts[0] if parts else None, pairs)
