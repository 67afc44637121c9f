"""What the FHIR R4 structure says about each element, read from fhir.resources' R4B models.

For a type and a JSON key: is it a list, a primitive (and which), a complex
type, a resource; which choice group it belongs to; and the order FHIR XML
writes elements in. Computed once per type and cached.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

# fhir.resources annotates primitives with a marker class named after the FHIR type.
_MARKER_TO_PRIMITIVE = {
    "Boolean": "boolean",
    "Integer": "integer",
    "PositiveInt": "positiveInt",
    "UnsignedInt": "unsignedInt",
    "Decimal": "decimal",
    "String": "string",
    "Code": "code",
    "Id": "id",
    "Uri": "uri",
    "Url": "url",
    "Canonical": "canonical",
    "Oid": "oid",
    "Uuid": "uuid",
    "UuidVersion": "uuid",
    "Markdown": "markdown",
    "Base64Binary": "base64Binary",
    "Date": "date",
    "DateTime": "dateTime",
    "Instant": "instant",
    "Time": "time",
    "Xhtml": "xhtml",
    "Integer64": "integer64",
}
PRIMITIVE_TYPES = frozenset(_MARKER_TO_PRIMITIVE.values())
RESOURCE = "Resource"


@dataclass(frozen=True)
class ElementDef:
    """One element of a type, as named in JSON (choice elements are expanded: valueQuantity)."""

    key: str
    type: str  # FHIR type: "string", "HumanName", "PatientContact", "Resource", ...
    is_list: bool
    choice_of: str | None  # "value" for valueQuantity
    required: bool
    allowed: frozenset[str] | None = None  # codes of a required binding, when the model knows them

    @property
    def is_primitive(self) -> bool:
        return self.type in PRIMITIVE_TYPES

    @property
    def is_resource(self) -> bool:
        return self.type == RESOURCE


@dataclass(frozen=True)
class TypeDef:
    name: str
    elements: dict[str, ElementDef]
    order: tuple[str, ...]
    choices: dict[str, tuple[str, ...]]  # "value" -> ("valueQuantity", "valueString", ...)

    def element(self, key: str) -> ElementDef | None:
        return self.elements.get(key)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner annotation, is_list) with Optional/Union-None removed."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
            annotation = args[0]
        elif origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            is_list, annotation = True, args[0]
        else:
            return annotation, is_list


def _type_name(annotation: Any) -> str:
    if annotation is bool:
        return "boolean"
    if typing.get_origin(annotation) is typing.Annotated:
        for marker in typing.get_args(annotation)[1:]:
            name = type(marker).__name__
            if name in _MARKER_TO_PRIMITIVE:
                return _MARKER_TO_PRIMITIVE[name]
        return "string"
    text = (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__forward_arg__", None) or getattr(annotation, "__name__", str(annotation))
    )
    text = str(text).removeprefix("abc.")
    text = re.sub(r"Type$", "", text)
    if text == "FHIRPrimitiveExtension":
        return "Element"
    return text


@cache
def type_def(name: str) -> TypeDef | None:
    """The structure of a FHIR type or backbone element, or None when unknown."""
    try:
        model = get_fhir_model_class(name)
    except (KeyError, ValueError, AttributeError):
        return None
    elements: dict[str, ElementDef] = {}
    choices: dict[str, list[str]] = {}
    for field_name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            continue
        key = info.alias or field_name
        inner, is_list = _unwrap(info.annotation)
        choice = extra.get("one_of_many")
        allowed = extra.get("enum_values")
        elements[key] = ElementDef(
            key,
            _type_name(inner),
            is_list,
            str(choice) if choice else None,
            bool(extra.get("element_required")) or info.is_required(),
            frozenset(str(code) for code in allowed) if isinstance(allowed, list) and allowed else None,
        )
        if choice:
            choices.setdefault(str(choice), []).append(key)
    order = tuple(model.elements_sequence())
    if "resourceType" in model.model_fields or name == "Resource":
        elements.setdefault("id", ElementDef("id", "id", False, None, False))
    return TypeDef(name, elements, order, {k: tuple(v) for k, v in choices.items()})


ABSTRACT_RESOURCE_TYPES = frozenset({"Resource", "DomainResource"})


def is_resource_type(name: str) -> bool:
    """A concrete R4 resource type (the abstract Resource and DomainResource cannot be instantiated)."""
    if name in ABSTRACT_RESOURCE_TYPES:
        return False
    tdef = type_def(name)
    if tdef is None:
        return False
    model = get_fhir_model_class(name)
    return (
        bool(getattr(model, "get_resource_type", None)) and "meta" in tdef.elements and "implicitRules" in tdef.elements
    )


def choice_key(base: str, fhir_type: str) -> str:
    """value + Quantity -> valueQuantity; value + string -> valueString."""
    return base + fhir_type[0].upper() + fhir_type[1:]


def type_from_suffix(suffix: str) -> str:
    """Quantity -> Quantity, String -> string, DateTime -> dateTime (the FHIR type of a value[x] suffix)."""
    candidate = suffix[0].lower() + suffix[1:]
    return candidate if candidate in PRIMITIVE_TYPES else suffix


def resolve_key(tdef: TypeDef, name: str, present: dict[str, Any] | None = None) -> list[ElementDef]:
    """Element(s) a FHIRPath name denotes in `tdef`: itself, or a choice group's members present in `present`."""
    direct = tdef.elements.get(name)
    if direct is not None:
        return [direct]
    members = tdef.choices.get(name, ())
    if present is None:
        return [tdef.elements[m] for m in members]
    return [tdef.elements[m] for m in members if m in present or "_" + m in present]
