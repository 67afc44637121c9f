"""The settings of Redis high availability: Sentinel, and how many replicas an acknowledged arrival must reach.
`Settings` (worker/settings.py) inherits these fields; one that is not read by its type names its reader in its
metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from worker.environment import SettingsError, patterns


def _sentinels(env: Mapping[str, str], name: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in patterns(env, name):
        try:
            parts = urlsplit(f"//{item}")
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise SettingsError(f"{name}: {item!r} is not host:port") from exc
        if not host or port is None or parts.path or parts.username:
            raise SettingsError(f"{name}: {item!r} is not host:port")
        found.append((host, port))
    return tuple(found)


@dataclass(frozen=True)
class RedisSettings:
    redis_sentinels: tuple[tuple[str, int], ...] = field(
        default=(),
        metadata={
            "env": "FHIR_PATCH_REDIS_SENTINELS",
            "read": lambda env, name, default: _sentinels(env, name),
            "doc": (
                "Comma-separated host:port of Redis Sentinels: every Redis client (broker, queues, counts, wake-ups) "
                "then follows the master they name (FHIR_PATCH_REDIS_SENTINEL_MASTER) through a failover; "
                "FHIR_PATCH_REDIS_URL gives only the database number and password."
            ),
        },
    )
    redis_sentinel_master: str = field(
        default="",
        metadata={
            "env": "FHIR_PATCH_REDIS_SENTINEL_MASTER",
            "doc": "The master's name in the Sentinels' configuration (with FHIR_PATCH_REDIS_SENTINELS).",
        },
    )
    redis_min_replicas: int = field(
        default=-1,
        metadata={
            "env": "FHIR_PATCH_REDIS_MIN_REPLICAS",
            "doc": (
                "Intake WAITs until this many replicas hold a job's arrival before it acknowledges it, so a "
                "promoted replica has every acknowledged job. -1 (the default): 1 with Sentinel, 0 without."
            ),
        },
    )
    redis_wait_ms: int = field(
        default=500,
        metadata={
            "env": "FHIR_PATCH_REDIS_WAIT_MS",
            "doc": (
                "How long that WAIT may take. Past it the arrival is acknowledged anyway and a warning is logged "
                "(semi-synchronous: a lost replica must not stop intake)."
            ),
        },
    )

    def __post_init__(self) -> None:
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise SettingsError(
                "FHIR_PATCH_REDIS_SENTINELS and FHIR_PATCH_REDIS_SENTINEL_MASTER are set together, or neither"
            )
        if self.redis_min_replicas < -1 or self.redis_wait_ms < 1:
            raise SettingsError("FHIR_PATCH_REDIS_MIN_REPLICAS is -1 or more, FHIR_PATCH_REDIS_WAIT_MS 1 or more")

    @property
    def replicas_to_wait_for(self) -> int:
        """The replicas an arrival waits for: FHIR_PATCH_REDIS_MIN_REPLICAS, or its default."""
        if self.redis_min_replicas >= 0:
            return self.redis_min_replicas
        return 1 if self.redis_sentinels else 0
