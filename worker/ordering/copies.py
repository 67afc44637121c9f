"""The copy of each resource's newest version kept in Redis (`{ns}:{<queue key>}:cur`, hash: v, doc).

Keys here are queue keys (`<tenant>/<Type>/<id>`, worker/model/tenants.py); `hint(tenant)` gives one tenant's
ResourceStore the same copies keyed by `Type/id`.

Workers and reads need no MongoDB lookup for it. It only moves forward; the
MongoDB insert still decides every write (a copy that is behind only makes a
commit collide and re-read).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import RedisError

from worker.edges import translating
from worker.model.tenants import DEFAULT_TENANT, queue_key
from worker.schedule.keys import KEEP_SECONDS, RedisKeys, decoded
from worker.schedule.scripts import scripts


@translating(RedisError, "Redis")
class NewestCopies:
    """Copies of the newest version of each resource."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self.keys = keys
        self._remember = scripts(client, "remember")["remember"]  # never backwards (prelude.lua remember_copy)

    def remember_newest(self, key: str, version_id: int, document: str, seconds: int = KEEP_SECONDS) -> bool:
        """Keep a copy of the newest version unless a newer one is already kept; True when kept."""
        return bool(
            self._remember({"copy": self.keys.copy(key)}, {"version": version_id, "doc": document, "seconds": seconds})
        )

    def remember_many(self, versions: list[tuple[str, int, str]]) -> None:
        """remember_newest for several (key, version id, document), in one round trip."""
        if not versions:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, version_id, document in versions:
            args = {"version": version_id, "doc": document, "seconds": KEEP_SECONDS}
            self._remember({"copy": self.keys.copy(key)}, args, client=pipe)
        pipe.execute()

    def newest_copy(self, key: str) -> str | None:
        value = self._redis.hget(self.keys.copy(key), "doc")
        return decoded(value) if value is not None else None

    def newest_copies(self, keys: list[str]) -> list[str | None]:
        """The kept copies of several keys, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(self.keys.copy(key), "doc")
        return [decoded(value) if value is not None else None for value in pipe.execute()]

    def newest_version(self, key: str) -> int:
        """The version number of the kept copy (0 when none): the hint ResourceStore starts from."""
        value = self._redis.hget(self.keys.copy(key), "v")
        return int(value) if value else 0

    def hint(self, tenant: str = DEFAULT_TENANT) -> tuple[Any, Any, Any, Any]:
        """The read-through hint one tenant's ResourceStore takes (storage.resource_store.VersionHint), by
        `Type/id`: the newest version number, remember a StoredVersion, the copy of a key, the copies of keys."""

        def remember(version: Any) -> None:
            self.remember_newest(queue_key(tenant, version.key), version.version_id, version.to_cache())

        return (
            lambda key: self.newest_version(queue_key(tenant, key)),
            remember,
            lambda key: self.newest_copy(queue_key(tenant, key)),
            lambda keys: self.newest_copies([queue_key(tenant, key) for key in keys]),
        )
