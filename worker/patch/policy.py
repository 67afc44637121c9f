"""What a patch may change: server-owned elements never, and per-type element policies.

Checked on the difference between the old and the new resource, so one rule
holds for all three patch formats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.patch.errors import ForbiddenChange, Issue
from worker.patch.validation import changed_keys

ElementPolicies = Mapping[str, Sequence[str]]
_SERVER_OWNED_META = ("versionId", "lastUpdated")


def _meta(resource: dict[str, Any], key: str) -> Any:
    meta = resource.get("meta")
    return meta.get(key) if isinstance(meta, dict) else None


def forbidden_changes(old: dict[str, Any], new: dict[str, Any], policies: ElementPolicies | None = None) -> list[Issue]:
    """One issue per element the patch changed but may not change."""
    kind = str(old.get("resourceType"))
    issues = []
    for key in ("resourceType", "id"):
        if old.get(key) != new.get(key):
            issues.append(
                Issue(
                    "not-supported",
                    f"{kind}.{key} cannot be changed by a patch ({old.get(key)!r} -> {new.get(key)!r})",
                    (f"{kind}.{key}",),
                )
            )
    for key in _SERVER_OWNED_META:
        if _meta(old, key) != _meta(new, key):
            issues.append(
                Issue(
                    "not-supported",
                    f"{kind}.meta.{key} belongs to the server and cannot be patched",
                    (f"{kind}.meta.{key}",),
                )
            )
    return issues + policy_violations(old, new, policies)


def policy_violations(old: dict[str, Any], new: dict[str, Any], policies: ElementPolicies | None) -> list[Issue]:
    """One issue per top-level element changed that the policy for the resource's type does not list."""
    kind = str(old.get("resourceType"))
    allowed = policies.get(kind) if policies else None
    if allowed is None:
        return []
    changed = {k.removeprefix("_") for k in changed_keys(old, new)} - {"resourceType", "id"}
    if "meta" in changed and _without_server_meta(old) == _without_server_meta(new):
        changed.discard("meta")
    return [
        Issue(
            "not-supported",
            f"{kind}.{key} cannot be changed here: a patch of {kind} may only change {', '.join(allowed) or 'nothing'}",
            (f"{kind}.{key}",),
        )
        for key in sorted(changed - set(allowed))
    ]


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    return {k: v for k, v in meta.items() if k not in _SERVER_OWNED_META} if isinstance(meta, dict) else {}


def check_changes(old: dict[str, Any], new: dict[str, Any], policies: ElementPolicies | None = None) -> None:
    issues = forbidden_changes(old, new, policies)
    if issues:
        raise ForbiddenChange.of(issues)
