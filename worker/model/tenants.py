"""Communities (tenants): each is its own registry, and every queue key names the one it belongs to.

A job's queue key is `<tenant>/<Type>/<id>` (worker/schedule/keys.py puts it in one hash tag), so
`DocumentReference/x` of two communities is two queues, and the schedule never needs to know what a tenant is.
A deployment without FHIR_PATCH_TENANTS has one tenant, `default`, and the same Redis keys as before tenants.
"""

from __future__ import annotations

DEFAULT_TENANT = "default"


def queue_key(tenant: str, key: str) -> str:
    """The schedule's key of resource `key` (`Type/id`) in `tenant`."""
    return f"{tenant}/{key}"


def split_queue_key(qualified: str) -> tuple[str, str]:
    """(tenant, `Type/id`) of a queue key (a tenant name never holds a `/`)."""
    tenant, _, key = qualified.partition("/")
    return tenant, key
