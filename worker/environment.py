"""Typed readers of environment variables: each returns the value or raises SettingsError naming the variable."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.model.callback_targets import CallbackRefused, allow_entries
from worker.model.tenants import TenantTarget, canonical_tenant, is_tenant_name


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


def text(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default).strip() or default


def number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {raw!r}")
    return value


def integer(env: Mapping[str, str], name: str, default: int) -> int:
    value = number(env, name, default)
    if value != int(value):
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default)."""
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def patterns(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def json_object(env: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} must be a JSON object: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SettingsError(f"{name} must be a JSON object")
    return loaded


def _policy(loaded: Any, name: str) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(e, str) for e in v) for k, v in loaded.items()
    ):
        raise SettingsError(
            f'{name} must map resource types to lists of element names, e.g. {{"DocumentReference": ["securityLabel"]}}'
        )
    return {k: tuple(v) for k, v in loaded.items()}


def policies(env: Mapping[str, str], name: str) -> Mapping[str, tuple[str, ...]]:
    return _policy(json_object(env, name), name)


def flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def client_policies(env: Mapping[str, str], name: str) -> Mapping[str, Mapping[str, tuple[str, ...]]]:
    """client id -> that client's policy, each shaped like FHIR_PATCH_ELEMENT_POLICIES."""
    return {client: _policy(policy, f"{name}[{client!r}]") for client, policy in json_object(env, name).items()}


def allow_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    entries = patterns(env, name)
    try:
        allow_entries(entries)
    except CallbackRefused as exc:
        raise SettingsError(f"{name}: {exc}") from exc
    return entries


def mongodb_uri(env: Mapping[str, str]) -> str:
    # FHIR_PATCH_MONGODB_URI wins; MONGODB_URI is honoured as the common convention.
    return text(env, "FHIR_PATCH_MONGODB_URI", env.get("MONGODB_URI", "") or "mongodb://127.0.0.1:27017")


@dataclass(frozen=True)
class WriteConcernSetting:
    """What MongoDB must have done before it acknowledges a write: `w` (a number of members or `majority`), the
    journal (`j`), and how long to wait for them (`wtimeout`, ms; past it the write is an error, retried)."""

    w: str | int = "majority"
    j: bool = True
    wtimeout_ms: int = 10_000

    def __str__(self) -> str:
        return f"w={self.w},j={str(self.j).lower()},wtimeout={self.wtimeout_ms}"


def write_concern(env: Mapping[str, str], name: str) -> WriteConcernSetting:
    """`majority` (the default: with j=true, wtimeout=10000), or `w=…,j=true|false,wtimeout=ms` in any order."""
    raw = env.get(name, "").strip()
    default = WriteConcernSetting()
    parts = dict(default.__dict__)
    for item in (p.strip() for p in raw.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        key, value = (key.strip(), value.strip()) if sep else ("w", key.strip())
        if key == "w" and (value == "majority" or (value.isdigit() and int(value) >= 1)):
            parts["w"] = value if value == "majority" else int(value)
        elif key == "j" and value in ("true", "false"):
            parts["j"] = value == "true"
        elif key == "wtimeout" and value.isdigit():
            parts["wtimeout_ms"] = int(value)
        else:
            raise SettingsError(f"{name}: {item!r} is not w=majority|N (N >= 1), j=true|false or wtimeout=milliseconds")
    return WriteConcernSetting(**parts)


def tenants(env: Mapping[str, str], name: str) -> Mapping[str, TenantTarget]:
    """Routing value -> its registry: a database name, or {"database": ..., "uri": ...}; keyed canonically (a
    `urn:oid:` value by its bare OID)."""
    targets: dict[str, TenantTarget] = {}
    for value, target in json_object(env, name).items():
        tenant = canonical_tenant(value)
        if not is_tenant_name(tenant) or tenant in targets:
            raise SettingsError(f"{name}: {value!r} is not a routing value (1 to 64 of A-Z a-z 0-9 . _ -), or twice")
        if isinstance(target, str) and target:
            targets[tenant] = TenantTarget(target)
        elif isinstance(target, dict) and isinstance(target.get("database"), str) and target["database"]:
            uri = target.get("uri", "")
            if not isinstance(uri, str) or set(target) - {"database", "uri"}:
                raise SettingsError(f"{name}[{value!r}] takes only a database name and a uri (strings)")
            targets[tenant] = TenantTarget(target["database"], uri)
        else:
            raise SettingsError(f'{name}[{value!r}] must be a database name or {{"database": ..., "uri": ...}}')
    databases = [(t.uri, t.database) for t in targets.values()]
    if len(set(databases)) != len(databases):
        raise SettingsError(f"{name}: two communities name the same database; each needs its own registry")
    return targets
