"""diff_resources: the FHIRPath Patch that turns one resource into another (HAPI's $diff).

`diff_as` gives the same change in either patch format, for `$diff` and for dry runs.

Minimal where it can be: unchanged elements produce nothing, changed complex
elements are descended into, lists are edited around their common prefix and
suffix (replace in place, then delete or insert the rest).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch

from worker.patch.fhir_json import copy_json, dumps
from worker.patch.structure import ElementDef, TypeDef, choice_key, type_def

Operations = list[dict[str, Any]]


def _operation(kind: str, path: str, **parts: dict[str, Any]) -> dict[str, Any]:
    listed = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    listed.extend({"name": name, **value} for name, value in parts.items())
    return {"name": "operation", "part": listed}


def _value(element: ElementDef, value: Any, extra: Any) -> dict[str, Any]:
    if element.is_resource:
        return {"resource": copy_json(value)}
    key = choice_key("value", element.type)
    part = {key: copy_json(value)}
    if extra is not None:
        part["_" + key] = copy_json(extra)
    return part


def _keys(old: dict[str, Any], new: dict[str, Any], tdef: TypeDef) -> list[str]:
    present = {k.removeprefix("_") for k in (*old, *new)} - {"resourceType"}
    return [k for k in tdef.order if k in present]


def _has(holder: dict[str, Any], key: str) -> bool:
    return key in holder or "_" + key in holder


def _diff_object(old: dict[str, Any], new: dict[str, Any], path: str, tdef: TypeDef, ops: Operations) -> None:
    keys = _keys(old, new, tdef)
    for key in keys:  # removals first, so a choice element can change type (valueString -> valueQuantity)
        if _has(old, key) and not _has(new, key):
            count = len(old.get(key) or old.get("_" + key) or []) if tdef.elements[key].is_list else 1
            ops.extend(
                _operation("delete", f"{path}.{key}" + ("[0]" if tdef.elements[key].is_list else ""))
                for _ in range(count)
            )
    for key in keys:
        element = tdef.elements[key]
        if _has(old, key) and _has(new, key):
            _diff_element(element, old, new, f"{path}.{key}", path, ops)
        elif _has(new, key):
            name = element.choice_of or key
            items, extras = _pairs(element, new)
            for value, extra in zip(items, extras):
                ops.append(_operation("add", path, name={"valueString": name}, value=_value(element, value, extra)))


def _pairs(element: ElementDef, holder: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    values, extras = holder.get(element.key), holder.get("_" + element.key)
    if not element.is_list:
        return [values], [extras]
    values = values if isinstance(values, list) else [None] * len(extras or [])
    extras = extras if isinstance(extras, list) else [None] * len(values)
    return values, extras


def _diff_element(
    element: ElementDef, old: dict[str, Any], new: dict[str, Any], path: str, parent: str, ops: Operations
) -> None:
    if element.is_list:
        _diff_list(element, old, new, path, ops)
        return
    (ov,), (oe,) = _pairs(element, old)
    (nv,), (ne,) = _pairs(element, new)
    if ov == nv and oe == ne:
        return
    if isinstance(ov, dict) and isinstance(nv, dict) and not element.is_resource and not element.is_primitive:
        tdef = type_def(element.type)
        if tdef is not None:
            _diff_object(ov, nv, path, tdef, ops)
            return
    if oe is not None and ne != oe:  # replace keeps a primitive's extensions: drop and add instead
        ops.append(_operation("delete", path))
        ops.append(
            _operation(
                "add", parent, name={"valueString": element.choice_of or element.key}, value=_value(element, nv, ne)
            )
        )
        return
    ops.append(_operation("replace", path, value=_value(element, nv, ne)))


def _diff_list(element: ElementDef, old: dict[str, Any], new: dict[str, Any], path: str, ops: Operations) -> None:
    old_items = list(zip(*_pairs(element, old)))
    new_items = list(zip(*_pairs(element, new)))
    prefix = 0
    while prefix < min(len(old_items), len(new_items)) and old_items[prefix] == new_items[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old_items), len(new_items)) - prefix and old_items[-1 - suffix] == new_items[-1 - suffix]:
        suffix += 1
    old_middle, new_middle = old_items[prefix : len(old_items) - suffix], new_items[prefix : len(new_items) - suffix]
    tdef = type_def(element.type) if not element.is_primitive and not element.is_resource else None
    for offset, ((ov, oe), (nv, ne)) in enumerate(zip(old_middle, new_middle)):
        at = f"{path}[{prefix + offset}]"
        if tdef is not None and isinstance(ov, dict) and isinstance(nv, dict):
            _diff_object(ov, nv, at, tdef, ops)
        elif oe is not None and ne != oe:
            ops.append(_operation("delete", at))
            ops.append(
                _operation("insert", path, value=_value(element, nv, ne), index={"valueInteger": prefix + offset})
            )
        else:
            ops.append(_operation("replace", at, value=_value(element, nv, ne)))
    common = min(len(old_middle), len(new_middle))
    for _ in range(len(old_middle) - common):
        ops.append(_operation("delete", f"{path}[{prefix + common}]"))
    for offset, (nv, ne) in enumerate(new_middle[common:]):
        ops.append(
            _operation("insert", path, value=_value(element, nv, ne), index={"valueInteger": prefix + common + offset})
        )


def diff_resources(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A FHIRPath Patch Parameters that turns `old` into `new` (same resource type)."""
    kind = str(old.get("resourceType"))
    tdef = type_def(kind)
    ops: Operations = []
    if tdef is not None:
        _diff_object(old, new, kind, tdef, ops)
    return {"resourceType": "Parameters", "parameter": ops}


def json_patch_between(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """RFC 6902 operations that turn `old` into `new` (the jsonpatch library's diff). It compares values by their
    JSON text: ours, so that a Decimal keeps its digits (and 1.50 is not 1.5)."""
    return [copy_json(operation) for operation in jsonpatch.JsonPatch.from_diff(old, new, dumps=dumps).patch]


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as a diff compares it by default: `meta` (version, lastUpdated, tags) left out."""
    return {key: value for key, value in resource.items() if key not in ("meta", "_meta")}


JSON_PATCH_MEDIA = "application/json-patch+json"
FHIRPATH_PATCH_MEDIA = "application/fhir+json"
DIFFERS: Mapping[str, Callable[[dict[str, Any], dict[str, Any]], Any]] = {
    FHIRPATH_PATCH_MEDIA: diff_resources,
    JSON_PATCH_MEDIA: json_patch_between,
}


def diff_as(media: str, old: dict[str, Any], new: dict[str, Any], include_meta: bool = False) -> Any:
    """The change from `old` to `new` as a FHIRPath Patch `Parameters` or as RFC 6902 operations (`media`, a key
    of DIFFERS); applying it to `old` (without its meta unless `include_meta`) gives `new` (likewise)."""
    if not include_meta:
        old, new = without_meta(old), without_meta(new)
    return DIFFERS[media](old, new)
