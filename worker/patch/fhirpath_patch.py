"""FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html): add, insert, delete, replace, move.

`parse_fhirpath_patch` checks the whole Parameters resource (every part,
every path's syntax) before any resource is read. Application follows the
specification: a path selects exactly one element (for delete, none is
allowed and does nothing); add never overwrites a non-repeating element;
insert indexes run 0..length; move's destination counts after removal;
deleting the last item of a list removes the list; elements left empty are
removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.patch.errors import (
    ElementExists,
    MalformedPatch,
    MultipleMatches,
    NotApplicable,
    TargetNotFound,
    Warnings,
    WrongStructure,
)
from worker.patch.fhir_json import copy_json
from worker.patch.fhirpath import Locator, Slot, companion, element_key, locate, split_member
from worker.patch.fhirpath_operations import FhirPathOperation, parse_fhirpath_patch
from worker.patch.parameter_values import BuildContext, build_value
from worker.patch.structure import PRIMITIVE_TYPES, choice_key, type_def


def _one(slots: list[Slot], op: FhirPathOperation, allow_none: bool = False) -> Slot | None:
    if len(slots) > 1:
        raise MultipleMatches(
            f"{op.where} ({op.type}): the path {op.path!r} selects {len(slots)} elements; it must select exactly one",
            op.where,
            op.path,
        )
    if not slots and not allow_none:
        raise TargetNotFound(f"{op.where} ({op.type}): the path {op.path!r} selects nothing", op.where, op.path)
    return slots[0] if slots else None


def _holder(slot: Slot, op: FhirPathOperation) -> tuple[dict[str, Any], str]:
    """The object that holds children of `slot`: itself, or a primitive's `_x` object."""
    if slot.type in PRIMITIVE_TYPES or not isinstance(slot.value, dict):
        holder = companion(slot, create=True)
        if holder is None:
            raise WrongStructure(f"{op.where} ({op.type}): {op.path!r} cannot hold child elements", op.where, op.path)
        return holder, "Element"
    return slot.value, slot.type


def _list_of(resource: dict[str, Any], op: FhirPathOperation) -> tuple[dict[str, Any], str, list[Any], str]:
    split = split_member(op.path)
    if split is None:
        raise MalformedPatch(
            f"{op.where} ({op.type}): the path must end with the name of a repeating element, such as "
            f"'Patient.identifier'",
            op.where,
            op.path,
        )
    base, name = split
    parent = _one(Locator(resource).locate(base), op)
    assert parent is not None
    holder, holder_type = _holder(parent, op)
    key = element_key(holder, holder_type, name, None)
    tdef = type_def(holder_type)
    element = tdef.element(key) if tdef and key else None
    if element is None or not element.is_list:
        raise WrongStructure(f"{op.where} ({op.type}): {op.path!r} is not a repeating element", op.where, op.path)
    items = holder.get(element.key)
    return holder, element.key, items if isinstance(items, list) else [], element.type


def _add(resource: dict[str, Any], op: FhirPathOperation, ctx: BuildContext) -> None:
    slot = _one(locate(resource, op.path), op)
    assert slot is not None and op.name is not None and op.value is not None
    holder, holder_type = _holder(slot, op)
    key = element_key(holder, holder_type, op.name, op.value.value_type)
    tdef = type_def(holder_type)
    element = tdef.element(key) if tdef and key else None
    if element is None:
        raise WrongStructure(
            f"{op.where} (add): {holder_type} has no element {op.name!r}", op.where, f"{op.path}.{op.name}"
        )
    value, extra, _ = build_value(op.value, element.type, ctx)
    if element.is_list:
        items = holder.setdefault(element.key, [])
        items.append(value)
        if extra is not None or "_" + element.key in holder:
            companions = holder.setdefault("_" + element.key, [])
            companions.extend([None] * (len(items) - 1 - len(companions)) + [extra])
        return
    taken = [
        k
        for k in (tdef.choices.get(element.choice_of, ()) if element.choice_of and tdef else (element.key,))
        if k in holder or "_" + k in holder
    ]
    if taken:
        raise ElementExists(
            f"{op.where} (add): {op.path}.{op.name} already exists; add never overwrites, use replace",
            op.where,
            f"{op.path}.{op.name}",
        )
    holder[element.key] = value
    if extra is not None:
        holder["_" + element.key] = extra


def _insert(resource: dict[str, Any], op: FhirPathOperation, ctx: BuildContext) -> None:
    holder, key, items, item_type = _list_of(resource, op)
    assert op.position is not None and op.value is not None
    if op.position > len(items):
        raise NotApplicable(
            f"{op.where} (insert): index {op.position} is out of range 0..{len(items)} for {op.path!r}",
            op.where,
            op.path,
        )
    value, extra, _ = build_value(op.value, item_type, ctx)
    items.insert(op.position, value)
    holder[key] = items
    companions = holder.get("_" + key)
    if isinstance(companions, list):
        companions.insert(op.position, extra)
    elif extra is not None:
        holder["_" + key] = [None] * (len(items) - 1)
        holder["_" + key].insert(op.position, extra)


def _delete(resource: dict[str, Any], op: FhirPathOperation, ctx: BuildContext) -> None:
    slot = _one(locate(resource, op.path), op, allow_none=True)
    if slot is None:
        return
    if slot.parent is None or slot.key is None:
        raise NotApplicable(f"{op.where} (delete): the resource itself cannot be deleted by a patch", op.where, op.path)
    remove(slot)


def remove(slot: Slot) -> None:
    """Remove one element (and its `_x` companion); an emptied list goes too."""
    assert slot.parent is not None and slot.key is not None
    parent, key = slot.parent, slot.key
    if slot.index is None:
        parent.pop(key, None)
        parent.pop("_" + key, None)
        return
    for name in (key, "_" + key):
        items = parent.get(name)
        if isinstance(items, list) and slot.index < len(items):
            del items[slot.index]
            if not items or all(i is None for i in items) and name.startswith("_"):
                del parent[name]


def _replace(resource: dict[str, Any], op: FhirPathOperation, ctx: BuildContext) -> None:
    slot = _one(locate(resource, op.path), op)
    assert slot is not None and op.value is not None
    if slot.parent is None or slot.key is None:
        raise NotApplicable(
            f"{op.where} (replace): the whole resource cannot be replaced by a patch; use update (PUT)",
            op.where,
            op.path,
        )
    value, extra, value_type = build_value(op.value, slot.type, ctx)
    if slot.index is not None:
        slot.parent[slot.key][slot.index] = value
    else:
        key = slot.key
        if slot.choice_of and value_type and choice_key(slot.choice_of, value_type) != key:
            slot.parent.pop(key, None)
            slot.parent.pop("_" + key, None)
            key = choice_key(slot.choice_of, value_type)
            slot.key = key
        slot.parent[key] = value
    if extra is not None:
        holder = companion(slot, create=True)
        if holder is not None:
            holder.clear()
            holder.update(extra)


def _move(resource: dict[str, Any], op: FhirPathOperation, ctx: BuildContext) -> None:
    holder, key, items, _ = _list_of(resource, op)
    assert op.source is not None and op.destination is not None
    if op.source >= len(items):
        raise NotApplicable(
            f"{op.where} (move): source {op.source} is out of range 0..{len(items) - 1} for {op.path!r}",
            op.where,
            op.path,
        )
    if op.destination >= len(items):
        raise NotApplicable(
            f"{op.where} (move): destination {op.destination} is out of range 0..{len(items) - 1} for {op.path!r}",
            op.where,
            op.path,
        )
    for name in (key, "_" + key):
        listed = holder.get(name)
        if isinstance(listed, list) and op.source < len(listed):
            listed.insert(op.destination, listed.pop(op.source))


_APPLY: Mapping[str, Callable[[dict[str, Any], FhirPathOperation, BuildContext], None]] = {
    "add": _add,
    "insert": _insert,
    "delete": _delete,
    "replace": _replace,
    "move": _move,
}


def prune_empty(value: Any) -> Any:
    """Remove elements left empty ({} or []) and companion lists holding only nulls."""
    if isinstance(value, dict):
        for key in list(value):
            item = prune_empty(value[key])
            if item in ({}, []) or (key.startswith("_") and isinstance(item, list) and all(i is None for i in item)):
                del value[key]
    elif isinstance(value, list):
        value[:] = [item for item in value if prune_empty(item) not in ({}, [])]
    return value


def apply_parsed_fhirpath_patch(
    resource: dict[str, Any], operations: tuple[FhirPathOperation, ...], ctx: BuildContext
) -> dict[str, Any]:
    result = copy_json(resource)
    for op in operations:
        _APPLY[op.type](result, op, ctx)
    return prune_empty(result)  # type: ignore[no-any-return]


def apply_fhirpath_patch(
    resource: dict[str, Any], parameters: dict[str, Any], *, strict: bool = False, warnings: Warnings | None = None
) -> dict[str, Any]:
    """Apply a FHIRPath Patch Parameters resource; a new resource, or a PatchError."""
    ctx = BuildContext(strict=strict, warnings=warnings if warnings is not None else Warnings())
    return apply_parsed_fhirpath_patch(resource, parse_fhirpath_patch(parameters), ctx)
