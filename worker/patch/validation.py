"""Is this a valid FHIR R4 resource? Each problem is one Issue with the element's FHIRPath.

Two passes. A strict walk over the JSON checks what fhir.resources lets
through but FHIR forbids: JSON kinds of primitives (`"active": "yes"`,
numbers as strings), primitive formats, nulls, empty strings, lists and
objects, unknown elements, two members of one choice group. When it finds
nothing, fhir.resources' R4B model checks the rest (cardinality, required
elements, value sets it knows).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from worker.patch.errors import Issue
from worker.patch.fhir_json import is_number
from worker.patch.structure import ElementDef, TypeDef, is_resource_type, type_def

_DATE = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_FORMATS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "code": r"[^\s]+( [^\s]+)*",
        "id": r"[A-Za-z0-9\-\.]{1,64}",
        "uri": r"\S+",
        "url": r"\S+",
        "canonical": r"\S+",
        "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
        "uuid": r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        "base64Binary": r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+",
        "date": _DATE,
        "dateTime": _DATE + r"(T" + _TIME + _ZONE + r")?",
        "instant": r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T"
        + _TIME
        + _ZONE,
        "time": _TIME,
        "string": r"[\s\S]*\S[\s\S]*",
        "markdown": r"[\s\S]*\S[\s\S]*",
        "xhtml": r"\s*<div[\s\S]*",
    }.items()
}
_INTEGER_RANGES = {"integer": (-(2**31), 2**31 - 1), "positiveInt": (1, 2**31 - 1), "unsignedInt": (0, 2**31 - 1)}


def _whole_and_small(value: float | Decimal) -> bool:
    """Checked before any int() conversion: int(Decimal('1e999999999')) would not finish."""
    if isinstance(value, float):
        return value.is_integer() and abs(value) < 2**53
    return value.is_finite() and value.adjusted() < 19 and value == value.to_integral_value()


def _primitive_problem(fhir_type: str, value: Any) -> str | None:
    """Why `value` is not a valid JSON `fhir_type`, or None."""
    if fhir_type == "boolean":
        return None if isinstance(value, bool) else f"must be true or false (a JSON boolean), not {value!r}"
    if fhir_type in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[fhir_type]
        if not is_number(value) or (isinstance(value, float | Decimal) and not _whole_and_small(value)):
            return f"must be a JSON whole number within {low}..{high} ({fhir_type}), not {value!r}"
        return None if low <= int(value) <= high else f"must be within {low}..{high} ({fhir_type}), not {value}"
    if fhir_type == "decimal":
        return None if is_number(value) else f"must be a JSON number (decimal), not {value!r}"
    if not isinstance(value, str):
        return f"must be a JSON string ({fhir_type}), not {value!r}"
    pattern = _FORMATS.get(fhir_type)
    if pattern is not None and not pattern.fullmatch(value):
        return f"{value!r} is not a valid {fhir_type}" if value.strip() else "must not be empty or only white space"
    return None


class _Walker:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def problem(self, path: str, message: str, code: str = "value") -> None:
        self.issues.append(Issue(code, f"{path}: {message}", (path,)))

    def resource(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.problem(path, "must be a JSON object holding a resource", "structure")
            return
        kind = value.get("resourceType")
        if not isinstance(kind, str) or not is_resource_type(kind):
            self.problem(
                f"{path}.resourceType" if path else "resourceType",
                f"{kind!r} is not a FHIR R4 resource type",
                "structure",
            )
            return
        self.complex(value, type_def(kind), path or kind, resource=True)

    def complex(self, value: dict[str, Any], tdef: TypeDef | None, path: str, resource: bool = False) -> None:
        if tdef is None:
            return
        if not value:
            self.problem(path, "must not be an empty object", "structure")
        seen_choices: dict[str, str] = {}
        for key, item in value.items():
            if resource and key == "resourceType":
                continue
            if key.startswith("_"):
                self.companion(tdef, key, item, path)
                continue
            element = tdef.element(key)
            if element is None:
                self.problem(f"{path}.{key}", f"is not an element of {tdef.name}", "structure")
                continue
            if element.choice_of:
                if element.choice_of in seen_choices:
                    self.problem(
                        f"{path}.{key}",
                        f"only one of {element.choice_of}[x] may be present (also {seen_choices[element.choice_of]})",
                        "structure",
                    )
                seen_choices[element.choice_of] = key
            self.element(element, item, f"{path}.{key}", value.get("_" + key))

    def element(self, element: ElementDef, value: Any, path: str, companion: Any) -> None:
        if element.is_list:
            if not isinstance(value, list):
                self.problem(path, f"repeats, so it must be a JSON array, not {type(value).__name__}", "structure")
                return
            if not value:
                self.problem(path, "must not be an empty array (leave the element out instead)", "structure")
            companions = companion if isinstance(companion, list) else []
            for index, item in enumerate(value):
                has_extension = index < len(companions) and companions[index] is not None
                self.single(element, item, f"{path}[{index}]", allow_null=element.is_primitive and has_extension)
        elif isinstance(value, list):
            self.problem(path, "does not repeat, so it must not be a JSON array", "structure")
        else:
            self.single(element, value, path, allow_null=False)

    def single(self, element: ElementDef, value: Any, path: str, allow_null: bool) -> None:
        if value is None:
            if not allow_null:
                self.problem(path, "must not be null", "structure")
        elif element.is_primitive:
            problem = _primitive_problem(element.type, value)
            if problem:
                self.problem(path, problem)
            elif element.allowed is not None and value not in element.allowed:
                self.problem(
                    path,
                    f"{value!r} is not one of the allowed codes: {', '.join(sorted(element.allowed))}",
                    "code-invalid",
                )
        elif element.is_resource:
            self.resource(value, path)
        elif not isinstance(value, dict):
            self.problem(path, f"must be a JSON object ({element.type}), not {value!r}", "structure")
        else:
            self.complex(value, type_def(element.type), path)

    def companion(self, tdef: TypeDef, key: str, value: Any, path: str) -> None:
        element = tdef.element(key[1:])
        where = f"{path}.{key}"
        if element is None or not element.is_primitive:
            self.problem(
                where, f"{key[1:]} is not a primitive element of {tdef.name}, so it cannot carry {key}", "structure"
            )
            return
        items = value if element.is_list and isinstance(value, list) else [value]
        if element.is_list != isinstance(value, list):
            self.problem(where, "must have the same shape (array or not) as " + key[1:], "structure")
            return
        for index, item in enumerate(items):
            if item is not None and not isinstance(item, dict):
                self.problem(where, "must hold objects with id and extension", "structure")
            elif isinstance(item, dict):
                self.complex(item, type_def("Element"), f"{where}[{index}]" if element.is_list else where)


def _model_issues(resource: dict[str, Any]) -> list[Issue]:
    model = get_fhir_model_class(resource["resourceType"])
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [_pydantic_issue(resource["resourceType"], err) for err in exc.errors()]
    except (ValueError, TypeError) as exc:
        return [Issue("invalid", f"{resource['resourceType']}: {exc}", (resource["resourceType"],))]
    return []


def _pydantic_issue(root: str, error: Any) -> Issue:
    path = root
    for part in error.get("loc", ()):
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith(("function-", "__")) and str(part) not in ("resourceType",):
            path += "." + str(part).replace("__ext", "").removesuffix("__")
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    required = error.get("type") == "missing" or message.endswith(
        "is required."
    )  # fhir.resources says so in a value error
    return Issue("required" if required else "invalid", f"{path}: {message}", (path,))


def resource_issues(resource: Any) -> list[Issue]:
    """Every problem that makes `resource` an invalid FHIR R4 resource (empty list when valid)."""
    walker = _Walker()
    walker.resource(resource, "")
    if walker.issues:
        return walker.issues
    return _model_issues(resource)


def lenient_issues(resource: Any) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) for storing imperfect data: JSON structure, element names, types and value formats are
    errors; what only the R4 model's rules catch (a required element missing, cardinality) comes back as warnings."""
    walker = _Walker()
    walker.resource(resource, "")
    if walker.issues:
        return walker.issues, []
    return [], [Issue(i.code, i.diagnostics, i.expression, severity="warning") for i in _model_issues(resource)]


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """Top-level keys whose value differs between two resources (added, removed or changed)."""
    return {
        key
        for key in old.keys() | new.keys()
        if old.get(key, _MISSING) != new.get(key, _MISSING) or type(old.get(key)) is not type(new.get(key))
    }


_MISSING = object()


def patched_resource_issues(old: dict[str, Any], new: Any) -> list[Issue]:
    """Problems the patch introduced: only the top-level elements it changed are checked.

    The stored resource was valid when written, and validity in FHIR's structure
    composes per top-level element, so this finds exactly the new problems in a
    fraction of the time of checking everything. Required elements and the other
    members of a changed choice group are checked along with the changed ones.
    """
    if not isinstance(new, dict) or not isinstance(old, dict) or new.get("resourceType") != old.get("resourceType"):
        return resource_issues(new)
    tdef = type_def(str(new.get("resourceType")))
    if tdef is None:
        return resource_issues(new)
    keys = {k.removeprefix("_") for k in changed_keys(old, new)}
    if not keys:
        return []
    groups = {e.choice_of for k in keys if (e := tdef.element(k)) is not None and e.choice_of}
    keep = keys | {e.key for e in tdef.elements.values() if e.required or e.choice_of in groups}
    partial = {k: v for k, v in new.items() if k == "resourceType" or k.removeprefix("_") in keep}
    if len(partial) == 1:
        return [] if len(new) > 1 else resource_issues(new)
    issues = resource_issues(partial)
    if issues:  # data stored leniently may carry old problems: only the ones this patch introduced count
        before = {k: v for k, v in old.items() if k == "resourceType" or k.removeprefix("_") in keep}
        known = {(i.code, i.expression) for i in (resource_issues(before) if len(before) > 1 else [])}
        issues = [i for i in issues if (i.code, i.expression) not in known]
    return issues
