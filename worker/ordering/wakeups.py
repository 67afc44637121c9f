"""Wake-ups: a job's end published on the namespace's channel, for the API processes waiting on it.

The message is `worker.model.wakeups.WakeUp`, encoded by the worker and
decoded by the API; this module only carries it.
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.schedule.keys import RedisKeys


@translating(RedisError, "Redis")
class Wakeups:
    """The channel of job wake-ups."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self.keys = keys

    @property
    def channel(self) -> str:
        return self.keys.done_channel

    def publish(self, messages: list[str]) -> None:
        """Publish encoded wake-ups, in order, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for message in messages:
            pipe.publish(self.keys.done_channel, message)
        pipe.execute()
