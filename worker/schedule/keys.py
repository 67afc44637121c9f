"""The Redis key schema, in one place: every module that touches Redis names its keys through this.

Two kinds of key:
- **a resource's own keys** are its queue key (`<tenant>/<Type>/<id>`, worker/model/tenants.py) in one hash
  tag, so they share one Redis Cluster slot: `{ns}:{default/Patient/1}:q` (its queue), `:lease`, `:mark`
  (worker/schedule/states.py) and `:cur` (the copy of its newest version). Every key the schedule is given is
  a queue key: the tenant is part of the key, and the schedule never splits it;
- **deployment-wide keys** (`{ns}:ready`, `{ns}:payload`, `{ns}:metrics:counts`, ...) are shared by every
  resource and tenant: the ready list and the drainers (one pool of drainers serves everyone), the payload
  copies, the counters and admission. The per-key scripts still touch some of these (the payload copies and the
  counts move in the same step as a job leaves its queue), so they do not run on Redis Cluster yet: README,
  "Redis Cluster", says what is left.

Lua never spells a key: scripts get their keys from here, and the one script that finds keys by name (the end
of a restore, whose held jobs name their resources) builds them with `own_key` from `own_prefix` (prelude.lua).
"""

from __future__ import annotations

from dataclasses import dataclass

KEEP_SECONDS = 86_400  # a copy of a newest version not refreshed for a day goes (the stores hold every version)


@dataclass(frozen=True)
class RedisKeys:
    namespace: str

    @property
    def own_prefix(self) -> str:
        """What a resource's own keys start with; `own_key` in prelude.lua completes it as `_own` does."""
        return f"{self.namespace}:{{"

    def _own(self, key: str, part: str) -> str:
        return f"{self.own_prefix}{key}}}:{part}"

    def queue(self, key: str) -> str:
        return self._own(key, "q")

    def lease(self, key: str) -> str:
        return self._own(key, "lease")

    def mark(self, key: str) -> str:
        """The key's schedule mark (worker/schedule/states.py): offered, retrying or taken."""
        return self._own(key, "mark")

    def copy(self, key: str) -> str:
        return self._own(key, "cur")

    @property
    def server(self) -> str:
        """The run id of the Redis server last seen answering, and since when (RedisSchedule.served_since)."""
        return f"{self.namespace}:server"

    def alive(self, worker: str) -> str:
        return f"{self.namespace}:alive:{worker}"

    def group(self, group_id: str) -> str:
        return f"{self.namespace}:group:{group_id}"

    def callback_scheduled(self, job_id: str) -> str:
        return f"{self.namespace}:cb:{job_id}"

    def proof(self, key: str) -> str:
        """A DPoP proof already used (worker/ordering/replays.py): its key thumbprint and a hash of its jti."""
        return f"{self.namespace}:dpop:{key}"

    def attempts(self, job_id: str) -> str:
        return f"{self.namespace}:attempts:{job_id}"

    @property
    def payloads(self) -> str:
        """Hash: job id -> a copy of the request of each queued job (MongoDB holds the original)."""
        return f"{self.namespace}:payload"

    @property
    def ready(self) -> str:
        """Items (keys) waiting for a drainer."""
        return f"{self.namespace}:ready"

    @property
    def due(self) -> str:
        """Sorted set: key -> when its retry is due (it then joins the ready list)."""
        return f"{self.namespace}:due"

    @property
    def drainers(self) -> str:
        return f"{self.namespace}:drainers"

    @property
    def drainer_items(self) -> str:
        return f"{self.namespace}:drainer-item"

    @property
    def drainer_seq(self) -> str:
        return f"{self.namespace}:drainer-seq"

    @property
    def keys_set(self) -> str:
        return f"{self.namespace}:keys"

    @property
    def counts(self) -> str:
        return f"{self.namespace}:metrics:counts"

    @property
    def latency(self) -> str:
        return f"{self.namespace}:metrics:latency"

    @property
    def done_channel(self) -> str:
        """The pub/sub channel of job wake-ups."""
        return f"{self.namespace}:done"

    @property
    def reconciler_lock(self) -> str:
        return f"{self.namespace}:reconciler"

    @property
    def unfinished(self) -> str:
        return f"{self.namespace}:unfinished"

    def synced(self, realm: str) -> str:
        """Present while every job in flight of the realm (the tenant: a queue key's first segment, `realm_of`)
        in MongoDB is in its Redis queue (or was never acknowledged)."""
        return f"{self.namespace}:synced:{realm}"

    def held(self, realm: str) -> str:
        """The realm's jobs that arrived while it was out of sync, in arrival order (JSON: id, keys)."""
        return f"{self.namespace}:held:{realm}"

    def held_payloads(self, realm: str) -> str:
        return f"{self.namespace}:heldp:{realm}"

    @property
    def restore_lock(self) -> str:
        return f"{self.namespace}:restoring"


def realm_of(key: str) -> str:
    """A queue key's realm, its first segment (the tenant, worker/model/tenants.py): the Redis copy of MongoDB is
    restored realm by realm, so one whose registry cannot be read holds up no other."""
    return key.partition("/")[0]


def client_field(client: str) -> str:
    """A client's field in the hash of unfinished jobs (admission control)."""
    return f"c:{client}"


def decoded(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value
