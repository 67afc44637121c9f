"""The DPoP proofs already used (api/dpop.py): a proof's `jti` is good for one request, across every API process."""

from __future__ import annotations

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.schedule.keys import RedisKeys


@translating(RedisError, "Redis")
class ProofReplays:
    """One Redis key per proof seen, expiring with the window in which the proof could be replayed."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self.keys = keys

    def first_use(self, key: str, seconds: float) -> bool:
        """True the first time `key` is offered within `seconds` (SET NX PX: one round trip)."""
        return bool(self._redis.set(self.keys.proof(key), b"", nx=True, px=max(1, int(seconds * 1000))))
