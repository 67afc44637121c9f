"""Every Redis client of the service, made here: from FHIR_PATCH_REDIS_URL, or, with Sentinel, the master the
Sentinels name, followed through a failover.

With Sentinel, redis-py asks the Sentinels for the master on every new connection and refuses a connection to a
server that is no longer master, so a client that lost its connection in a failover reconnects to the promoted
replica. The URL then gives only the database number and the credentials. Celery uses kombu's `sentinel://`
transport, which does the same for the broker.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.connection import parse_url
from redis.sentinel import Sentinel

from worker.redis_settings import RedisSettings

SENTINEL_TIMEOUTS = {"socket_timeout": 2.0, "socket_connect_timeout": 1.0}  # a Sentinel answers at once, or is down


def sync_client(redis_url: str, settings: RedisSettings, **options: Any) -> redis.Redis:
    """A client of the master: `options` are redis-py's (timeouts, health checks)."""
    client: redis.Redis = _master(redis.Redis.from_url, Sentinel, redis_url, settings, options)
    return client


def async_client(redis_url: str, settings: RedisSettings, **options: Any) -> aioredis.Redis:
    """The asyncio twin of `sync_client` (the API's wake-up listener)."""
    client: aioredis.Redis = _master(aioredis.Redis.from_url, AsyncSentinel, redis_url, settings, options)
    return client


def _master(from_url: Any, sentinel: Any, redis_url: str, settings: RedisSettings, options: dict[str, Any]) -> Any:
    if not settings.redis_sentinels:
        return from_url(redis_url, **options)
    sentinels = sentinel(list(settings.redis_sentinels), sentinel_kwargs=dict(SENTINEL_TIMEOUTS))
    return sentinels.master_for(settings.redis_sentinel_master, **_database(redis_url), **options)


def broker(redis_url: str, settings: RedisSettings) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and the transport options it needs: kombu's sentinel transport names every Sentinel
    (`sentinel://host:port/db;...`) and the master in `master_name`."""
    if not settings.redis_sentinels:
        return redis_url, {}
    database = _database(redis_url)
    urls = ";".join(
        f"sentinel://{_host(host)}:{port}/{database.get('db', 0)}" for host, port in settings.redis_sentinels
    )
    options: dict[str, Any] = {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": SENTINEL_TIMEOUTS}
    if database.get("password"):
        options["password"] = database["password"]
    return urls, options


def _database(redis_url: str) -> dict[str, Any]:
    """The database number and credentials of FHIR_PATCH_REDIS_URL (its host and port are the Sentinels' to say)."""
    parsed: dict[str, Any] = parse_url(redis_url)  # type: ignore[no-untyped-call]  # redis-py's own URL parser
    return {name: parsed[name] for name in ("db", "username", "password") if parsed.get(name) is not None}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
