"""Communities (tenants): each is its own registry, and every queue key names the one it belongs to.

A job's queue key is `<tenant>/<Type>/<id>` (worker/schedule/keys.py puts it in one hash tag), so
`DocumentReference/x` of two communities is two queues, and the schedule never needs to know what a tenant is.
A deployment without FHIR_PATCH_TENANTS has one tenant, `default`, and the same Redis keys as before tenants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TENANT = "default"


def queue_key(tenant: str, key: str) -> str:
    """The schedule's key of resource `key` (`Type/id`) in `tenant`."""
    return f"{tenant}/{key}"


def split_queue_key(qualified: str) -> tuple[str, str]:
    """(tenant, `Type/id`) of a queue key (a tenant name never holds a `/`)."""
    tenant, _, key = qualified.partition("/")
    return tenant, key


_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # an OID, or any short name without `/` (it is part of queue keys)
_OID_URN = "urn:oid:"


def canonical_tenant(value: str) -> str:
    """A routing value as the tenant it names: a bare OID and its `urn:oid:` form are one community."""
    value = value.strip()
    return value[len(_OID_URN) :] if value.lower().startswith(_OID_URN) else value


def is_tenant_name(value: str) -> bool:
    return bool(_NAME.fullmatch(value))


@dataclass(frozen=True)
class TenantTarget:
    """Where one community's registry lives: a database, on the service's MongoDB unless `uri` names another."""

    database: str
    uri: str = ""
