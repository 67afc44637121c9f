"""Settings, read once from the environment into a frozen, typed object.

Every component receives a `Settings` instance; nothing else reads
`os.environ`. The table in README.md lists each variable, its default and
its meaning; `Settings.describe()` is the single source of that table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from worker.access_settings import AccessSettings
from worker.environment import (
    SettingsError,
    WriteConcernSetting,
    allow_list,
    choice,
    client_policies,
    flag,
    integer,
    mongodb_uri,
    number,
    patterns,
    policies,
    tenants,
    text,
    write_concern,
)
from worker.model.tenants import TenantTarget
from worker.redis_settings import RedisSettings

__all__ = ["Settings", "SettingsError"]


@dataclass(frozen=True)
class Settings(RedisSettings, AccessSettings):
    """Everything configurable, with its environment variable in the field metadata (and the fields of
    AccessSettings and RedisSettings first)."""

    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata={"env": "FHIR_PATCH_REDIS_URL", "doc": "Redis: Celery broker, per-resource queues, wake-ups."},
    )
    mongodb_uri: str = field(
        default="mongodb://127.0.0.1:27017",
        metadata={
            "env": "FHIR_PATCH_MONGODB_URI",
            "doc": (
                "MongoDB-protocol server holding resources, history and jobs (MONGODB_URI is read when this is unset)."
            ),
        },
    )
    mongodb_write_concern: WriteConcernSetting = field(
        default=WriteConcernSetting(),
        metadata={
            "env": "FHIR_PATCH_MONGODB_WRITE_CONCERN",
            "doc": (
                "What MongoDB must do before it acknowledges a write: `w=majority,j=true,wtimeout=10000` by default "
                "(the commit, job records, results and Idempotency-Key bindings all need it), or e.g. `w=1,j=false`."
            ),
        },
    )
    mongodb_retry_seconds: float = field(
        default=15.0,
        metadata={
            "env": "FHIR_PATCH_MONGODB_RETRY_SECONDS",
            "doc": (
                "How long a MongoDB call is retried through an election (not primary, connection lost, write "
                "concern timed out) before the request is answered 503 with Retry-After."
            ),
        },
    )
    database: str = field(
        default="fhir_patch", metadata={"env": "FHIR_PATCH_DATABASE", "doc": "MongoDB database name."}
    )
    tenants: Mapping[str, TenantTarget] = field(
        default_factory=dict,
        metadata={
            "env": "FHIR_PATCH_TENANTS",
            "read": lambda env, name, default: tenants(env, name),
            "doc": (
                'JSON: a routing value -> its own registry, a database name or {"database": ..., "uri": ...} '
                "(another MongoDB deployment). Set: every /fhir request but metadata names one (README: communities)."
            ),
        },
    )
    tenant_parameter: str = field(
        default="homeCommunityId",
        metadata={
            "env": "FHIR_PATCH_TENANT_PARAMETER",
            "doc": "The query parameter that names the community (tenant) of a request, with FHIR_PATCH_TENANTS.",
        },
    )
    namespace: str = field(
        default="fhir-patch",
        metadata={
            "env": "FHIR_PATCH_NAMESPACE",
            "doc": "Celery queue name and Redis key prefix, so several deployments can share one Redis.",
        },
    )
    http_host: str = field(
        default="127.0.0.1", metadata={"env": "FHIR_PATCH_HTTP_HOST", "doc": "Address the API listens on."}
    )
    http_port: int = field(default=8080, metadata={"env": "FHIR_PATCH_HTTP_PORT", "doc": "Port the API listens on."})
    base_url: str = field(
        default="",
        metadata={
            "env": "FHIR_PATCH_BASE_URL",
            "doc": "Public base URL used in Location headers; empty means derived from each request.",
        },
    )
    sync_wait_seconds: float = field(
        default=10.0,
        metadata={
            "env": "FHIR_PATCH_SYNC_WAIT_SECONDS",
            "doc": "How long a synchronous PATCH waits for its job before answering 202.",
        },
    )
    direct_sync: bool = field(
        default=True,
        metadata={
            "env": "FHIR_PATCH_DIRECT_SYNC",
            "read": lambda env, name, default: flag(env, name, default),
            "doc": (
                "true: a synchronous write on a resource with nothing queued is applied by the API process itself "
                "(no job record, no worker); false: every write goes through the queue and a worker."
            ),
        },
    )
    max_body_bytes: int = field(
        default=1_048_576,
        metadata={"env": "FHIR_PATCH_MAX_BODY_BYTES", "doc": "Largest accepted request body (413 above)."},
    )
    job_retention_seconds: float = field(
        default=86_400.0,
        metadata={
            "env": "FHIR_PATCH_JOB_RETENTION_SECONDS",
            "doc": "How long finished jobs stay pollable before removal.",
        },
    )
    lease_seconds: float = field(
        default=30.0,
        metadata={
            "env": "FHIR_PATCH_LEASE_SECONDS",
            "doc": "How long a worker owns a resource key without renewing; a paused worker loses it after this.",
        },
    )
    visibility_timeout_seconds: int = field(
        default=3600,
        metadata={
            "env": "FHIR_PATCH_VISIBILITY_TIMEOUT_SECONDS",
            "doc": (
                "Redis broker visibility timeout: an unacknowledged message is redelivered after this. Must exceed "
                "the longest job."
            ),
        },
    )
    reconcile_interval_seconds: float = field(
        default=15.0,
        metadata={
            "env": "FHIR_PATCH_RECONCILE_INTERVAL_SECONDS",
            "doc": "How often the reconciler re-enqueues accepted jobs that Redis lost.",
        },
    )
    worker_ping_timeout_seconds: float = field(
        default=1.0,
        metadata={
            "env": "FHIR_PATCH_WORKER_PING_TIMEOUT_SECONDS",
            "doc": "How long /readyz waits for a Celery worker to answer a ping.",
        },
    )
    callback_secret: str = field(
        default="",
        metadata={
            "env": "FHIR_PATCH_CALLBACK_SECRET",
            "doc": "Standard Webhooks secret (whsec_... base64) used to sign callbacks.",
        },
    )
    callback_allow: tuple[str, ...] = field(
        default=(),
        metadata={
            "env": "FHIR_PATCH_CALLBACK_ALLOW",
            "doc": (
                "Comma-separated origins with an optional path prefix callbacks may target "
                "(https://hooks.example.org/fhir/; port * admits any port); empty refuses every callback."
            ),
        },
    )
    callback_give_up_seconds: float = field(
        default=3600.0,
        metadata={
            "env": "FHIR_PATCH_CALLBACK_GIVE_UP_SECONDS",
            "doc": "How long failed callbacks are retried before giving up.",
        },
    )
    element_policies: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict,
        metadata={
            "env": "FHIR_PATCH_ELEMENT_POLICIES",
            "doc": 'JSON: resource type -> elements a patch may change, e.g. {"DocumentReference": ["securityLabel"]}.',
        },
    )
    client_element_policies: Mapping[str, Mapping[str, tuple[str, ...]]] = field(
        default_factory=dict,
        metadata={
            "env": "FHIR_PATCH_CLIENT_ELEMENT_POLICIES",
            "doc": (
                "JSON: client id -> policy as in FHIR_PATCH_ELEMENT_POLICIES; narrows the global one for that "
                "client (403 beyond it)."
            ),
        },
    )
    max_unfinished_per_client: int = field(
        default=100_000,
        metadata={
            "env": "FHIR_PATCH_MAX_UNFINISHED_PER_CLIENT",
            "doc": "Jobs a client may have accepted and not finished; past it 429 with Retry-After.",
        },
    )
    max_queue_depth: int = field(
        default=1_000_000,
        metadata={
            "env": "FHIR_PATCH_MAX_QUEUE_DEPTH",
            "doc": "Jobs the whole service may have accepted and not finished; past it 503 with Retry-After.",
        },
    )
    mongodb_command_log: str = field(
        default="",
        metadata={
            "env": "FHIR_PATCH_MONGODB_COMMAND_LOG",
            "doc": (
                "A file to append the shape of every MongoDB command to (never values): the storage-rule test "
                "reads it. Empty: off."
            ),
        },
    )
    log_level: str = field(
        default="INFO", metadata={"env": "FHIR_PATCH_LOG_LEVEL", "doc": "Python log level of API and workers."}
    )
    allowed_hosts: tuple[str, ...] = field(
        default=("127.0.0.1", "localhost", "::1"),
        metadata={
            "env": "FHIR_PATCH_ALLOWED_HOSTS",
            "doc": (
                "Comma-separated host names a request's Host header may name when FHIR_PATCH_BASE_URL is empty "
                "(other hosts get 400); URLs in answers are built from it."
            ),
        },
    )
    store_validation: str = field(
        default="strict",
        metadata={
            "env": "FHIR_PATCH_STORE_VALIDATION",
            "doc": (
                "strict: create and update refuse a resource that breaks any R4 rule (422). lenient: structure, "
                "types and value formats are still refused, but missing required elements and cardinality are "
                "warnings; a patch may never add a problem in either mode."
            ),
        },
    )
    max_feed_lines: int = field(
        default=200_000,
        metadata={
            "env": "FHIR_PATCH_MAX_FEED_LINES",
            "doc": "Most lines one NDJSON feed may hold; the rest is refused with 413 (resend them as another feed).",
        },
    )
    job_time_limit_seconds: float = field(
        default=30.0,
        metadata={
            "env": "FHIR_PATCH_JOB_TIME_LIMIT_SECONDS",
            "doc": (
                "Hard limit on one drain task; a task past it is killed and its job is retried, then failed alone "
                "(its key goes on)."
            ),
        },
    )
    api_processes: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={
            "env": "FHIR_PATCH_API_PROCESSES",
            "doc": (
                "uvicorn processes serving the API under `fhir-patch serve`; default one per CPU core, since the API "
                "applies synchronous writes itself (README: sizing the processes)."
            ),
        },
    )
    workers: int = field(
        default=1,
        metadata={
            "env": "FHIR_PATCH_WORKERS",
            "doc": (
                "Celery worker processes under `fhir-patch serve`, each with its own pool; with the pool size, the "
                "number of drainers kept (every process must agree) (README: sizing)."
            ),
        },
    )
    worker_concurrency: int = field(
        default=2,
        metadata={
            "env": "FHIR_PATCH_WORKER_CONCURRENCY",
            "doc": "Pool processes of each Celery worker: jobs applied at once per worker (README: sizing).",
        },
    )
    drainers: int = field(
        default=0,
        metadata={
            "env": "FHIR_PATCH_DRAINERS",
            "doc": (
                "Drainers the deployment keeps running: the pool processes of every worker host together. "
                "0: FHIR_PATCH_WORKERS x FHIR_PATCH_WORKER_CONCURRENCY, right for one host (README: scaling out)."
            ),
        },
    )
    stall_seconds: float = field(
        default=60.0,
        metadata={
            "env": "FHIR_PATCH_STALL_SECONDS",
            "doc": "/readyz answers 503 when jobs are queued and none has finished for this long.",
        },
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment once; raise SettingsError naming any bad variable. Each field is read by its
        reader (its `read` metadata, else _READERS), else by its type; the variable is its `env` metadata."""
        source = os.environ if env is None else env
        defaults = cls()
        values = {
            f.name: (f.metadata.get("read") or _READERS.get(f.name) or _BY_TYPE[str(f.type)])(
                source, f.metadata["env"], getattr(defaults, f.name)
            )
            for f in fields(cls)
        }
        return cls(**values)

    @staticmethod
    def describe() -> list[dict[str, Any]]:
        """(variable, default, meaning) rows, for the README and `fhir-patch settings`."""
        defaults = Settings()
        return [
            {"env": f.metadata["env"], "default": getattr(defaults, f.name), "doc": f.metadata["doc"]}
            for f in fields(Settings)
        ]

    @staticmethod
    def environment_names() -> frozenset[str]:
        return frozenset(f.metadata["env"] for f in fields(Settings))


Reader = Callable[[Mapping[str, str], str, Any], Any]  # (environment, variable name, default) -> value

_BY_TYPE: Mapping[str, Reader] = {"str": text, "int": integer, "float": number}
_READERS: Mapping[str, Reader] = {
    "mongodb_uri": lambda env, name, default: mongodb_uri(env),
    "mongodb_write_concern": lambda env, name, default: write_concern(env, name),
    "base_url": lambda env, name, default: text(env, name, default).rstrip("/"),
    "log_level": lambda env, name, default: text(env, name, default).upper(),
    "callback_allow": lambda env, name, default: allow_list(env, name),
    "element_policies": lambda env, name, default: policies(env, name),
    "client_element_policies": lambda env, name, default: client_policies(env, name),
    "allowed_hosts": lambda env, name, default: patterns(env, name) or default,
    "store_validation": lambda env, name, default: choice(env, name, ("strict", "lenient")),
}
