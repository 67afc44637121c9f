"""Values carried by FHIRPath Patch parameters, turned into FHIR JSON for a target type.

A value part is either typed (`valueQuantity`, `valueString`...), anonymous
(nested `part`s named after the target's elements: a backbone element or a
data type given piece by piece), or a whole `resource`. Real feeds are messy:
a repeating element given as one object (`"coding": {...}`) is wrapped into a
list with a warning, or refused when the patch is applied strictly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.patch.errors import MalformedPatch, Warnings, WrongStructure
from worker.patch.fhir_json import copy_json
from worker.patch.structure import PRIMITIVE_TYPES, choice_key, type_def, type_from_suffix

_VALUE_PREFIX = "value"


@dataclass(frozen=True)
class ValuePart:
    """A checked value part: exactly one of typed value, nested parts or resource."""

    where: str
    value_type: str | None = None  # FHIR type from the value[x] suffix
    json: Any = None
    companion: Any = None  # the _value[x] object (id, extensions of a primitive)
    parts: tuple[tuple[str, ValuePart], ...] = ()
    resource: dict[str, Any] | None = None


@dataclass
class BuildContext:
    strict: bool
    warnings: Warnings = field(default_factory=Warnings)


def value_keys(part: dict[str, Any]) -> list[str]:
    return [k for k in part if k.startswith(_VALUE_PREFIX) and len(k) > len(_VALUE_PREFIX)]


def _typed_value(part: dict[str, Any], where: str, key: str) -> ValuePart:
    fhir_type = type_from_suffix(key[len(_VALUE_PREFIX) :])
    if fhir_type not in PRIMITIVE_TYPES and type_def(fhir_type) is None:
        raise MalformedPatch(f"{where}: {key} does not name a FHIR data type", f"{where}.{key}", code="value")
    if part[key] is None:
        raise MalformedPatch(f"{where}: {key} must not be null", f"{where}.{key}", code="value")
    return ValuePart(where, fhir_type, part[key], part.get("_" + key))


def parse_value_part(part: dict[str, Any], where: str) -> ValuePart:
    """Check the form of a value part (400 when malformed) without knowing its target yet."""
    typed = value_keys(part)
    if "value" in part:
        raise MalformedPatch(
            f"{where}: 'value' needs its type in the name: write valueString, valueCode, valueBoolean, "
            "valueInteger, valueDecimal, valueQuantity, valueCodeableConcept, ... instead of 'value'",
            where,
        )
    present = len(typed) + ("part" in part) + ("resource" in part)
    if present != 1:
        raise MalformedPatch(
            f"{where}: a value part needs exactly one of value[x], part or resource (found {present})",
            where,
            code="structure",
        )
    if typed:
        return _typed_value(part, where, typed[0])
    if "resource" in part:
        if not isinstance(part["resource"], dict) or not isinstance(part["resource"].get("resourceType"), str):
            raise MalformedPatch(
                f"{where}: resource must be a FHIR resource object", f"{where}.resource", code="structure"
            )
        return ValuePart(where, str(part["resource"]["resourceType"]), resource=part["resource"])
    nested = part["part"]
    if not isinstance(nested, list) or not nested:
        raise MalformedPatch(
            f"{where}: part must be a non-empty array of named parts", f"{where}.part", code="structure"
        )
    children = []
    for index, child in enumerate(nested):
        child_where = f"{where}.part[{index}]"
        if not isinstance(child, dict) or not isinstance(child.get("name"), str) or not child["name"]:
            raise MalformedPatch(f"{child_where}: each part needs a name", child_where, code="required")
        children.append((child["name"], parse_value_part(child, child_where)))
    return ValuePart(where, None, parts=tuple(children))


def build_value(part: ValuePart, target_type: str | None, ctx: BuildContext) -> tuple[Any, Any, str | None]:
    """(JSON value, companion `_x` object or None, FHIR type of the value) for the target type."""
    if part.resource is not None:
        return conform(copy_json(part.resource), part.resource["resourceType"], part.where, ctx), None, part.value_type
    if part.value_type is not None:
        value = copy_json(part.json)
        if isinstance(value, dict) and part.value_type not in PRIMITIVE_TYPES:
            value = conform(value, part.value_type, part.where, ctx)
        return value, copy_json(part.companion), part.value_type
    return _anonymous(part, target_type, ctx), None, target_type


def _anonymous(part: ValuePart, target_type: str | None, ctx: BuildContext) -> dict[str, Any]:
    tdef = type_def(target_type) if target_type and target_type not in PRIMITIVE_TYPES else None
    if tdef is None:
        raise WrongStructure(
            f"{part.where}: nested parts can only build a complex element, but the target is "
            f"{target_type or 'unknown'}",
            part.where,
        )
    built: dict[str, Any] = {}
    for name, child in part.parts:
        key = (
            name
            if name in tdef.elements
            else (choice_key(name, child.value_type) if name in tdef.choices and child.value_type else None)
        )
        element = tdef.element(key) if key else None
        if element is None:
            raise WrongStructure(f"{child.where}: {tdef.name} has no element {name!r}", child.where)
        value, companion, _ = build_value(child, element.type, ctx)
        if element.is_list:
            built.setdefault(element.key, []).append(value)
            if companion is not None:
                built.setdefault("_" + element.key, [None] * (len(built[element.key]) - 1)).append(companion)
        elif element.key in built:
            raise MalformedPatch(
                f"{child.where}: {tdef.name}.{name} does not repeat, but is given more than once",
                child.where,
                code="structure",
            )
        else:
            built[element.key] = value
            if companion is not None:
                built["_" + element.key] = companion
    return built


def conform(value: dict[str, Any], fhir_type: str, where: str, ctx: BuildContext) -> dict[str, Any]:
    """Wrap repeating elements given as a single object into arrays (warning), or refuse when strict."""
    tdef = type_def(str(value.get("resourceType", fhir_type)) if fhir_type == "Resource" else fhir_type)
    if tdef is None:
        return value
    for key, item in list(value.items()):
        element = tdef.element(key)
        if element is None or item is None:
            continue
        if element.is_list and not isinstance(item, list):
            message = f"{tdef.name}.{key} repeats, so it must be a JSON array"
            if ctx.strict:
                raise MalformedPatch(f'{where}: {message}: write "{key}": [ ... ]', where, code="structure")
            ctx.warnings.add(f"{where}: {message}; the single value was wrapped in an array", where)
            item = value[key] = [item]
        for child in item if isinstance(item, list) else [item]:
            if isinstance(child, dict) and not element.is_primitive:
                conform(child, element.type, where, ctx)
    return value
