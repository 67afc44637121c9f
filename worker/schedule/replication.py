"""Arrivals acknowledged only once replicas hold them (FHIR_PATCH_REDIS_MIN_REPLICAS), for Redis with Sentinel.

Redis replicates asynchronously: a replica promoted by Sentinel may lack the newest writes of the old master.
Losing an arrival the client was told about would let a later job on the same resource run first. So intake
sends `WAIT replicas timeout` on the same connection, right after the arrival, in one round trip (WAIT counts
the writes of its own connection). Past the timeout the arrival is acknowledged anyway and a warning is logged:
semi-synchronous, as a lost replica must not stop intake; the README says what that window risks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fhir_patch.replication")
WARN_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class Replication:
    replicas: int = 0  # 0: acknowledge once the master holds the arrival
    wait_ms: int = 500


ASYNCHRONOUS = Replication()  # the default: no replica asked for


class ReplicatedWrites:
    def __init__(self, replication: Replication) -> None:
        self.replication = replication
        self._warned_at = float("-inf")
        self.short = 0  # arrivals acknowledged before enough replicas held them

    def execute(self, pipe: Any) -> list[Any]:
        """Run a pipeline of arrivals (then WAIT, when replicas are asked for); the arrivals' replies."""
        wanted = self.replication.replicas
        if wanted <= 0:
            replies: list[Any] = pipe.execute()
            return replies
        pipe.execute_command("WAIT", wanted, self.replication.wait_ms)
        *replies, reached = pipe.execute()
        if int(reached) < wanted:
            self._short(int(reached))
        return replies

    def _short(self, reached: int) -> None:
        self.short += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "arrivals acknowledged with %d of %d replicas after %d ms (FHIR_PATCH_REDIS_MIN_REPLICAS): a "
                "failover now could lose them from the queues",
                reached,
                self.replication.replicas,
                self.replication.wait_ms,
                extra={"short_acknowledgements": self.short},
            )
