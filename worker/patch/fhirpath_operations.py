"""FHIRPath Patch operations read from a Parameters resource and checked completely before any resource is read.

Every operation's parts are checked independently, and every operation is
checked: the 400 lists every problem, each with the part it is in (as HAPI
collects them). Every path's syntax and cost are checked here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.patch.errors import Issue, MalformedPatch
from worker.patch.fhirpath import parse_path
from worker.patch.parameter_values import ValuePart, parse_value_part

_PARTS: Mapping[str, frozenset[str]] = {
    "add": frozenset({"type", "path", "name", "value"}),
    "insert": frozenset({"type", "path", "value", "index"}),
    "delete": frozenset({"type", "path"}),
    "replace": frozenset({"type", "path", "value"}),
    "move": frozenset({"type", "path", "source", "destination"}),
}
_HINTS = {
    (
        "replace",
        "name",
    ): "replace takes no name part: put the element in the path (path 'Patient.birthDate', not path 'Patient' with "
    "name 'birthDate')",
    ("delete", "value"): "delete takes no value part: the path alone selects what to delete",
    ("insert", "name"): "insert takes no name part: the path names the list (e.g. 'Patient.identifier')",
}
_STRING_KEYS = ("valueString", "valueCode", "valueUri", "valueId")
_INTEGER_KEYS = ("valueInteger", "valueUnsignedInt", "valuePositiveInt")


@dataclass(frozen=True)
class FhirPathOperation:
    index: int
    type: str
    path: str
    name: str | None = None
    value: ValuePart | None = None
    position: int | None = None
    source: int | None = None
    destination: int | None = None

    @property
    def where(self) -> str:
        return f"Parameters.parameter[{self.index}]"


def _string(part: dict[str, Any], where: str, label: str) -> str:
    for key in _STRING_KEYS:
        if isinstance(part.get(key), str):
            if not part[key].strip():
                example = (
                    '"valueCode": "replace" (or add, insert, delete, move)'
                    if label == "type"
                    else '"valueString": "..."'
                )
                raise MalformedPatch(
                    f'{where}: {label} is empty; write {{"name": "{label}", {example}}}', where, code="required"
                )
            return str(part[key])
    raise MalformedPatch(f"{where}: {label} must be given as valueString (or valueCode)", where, code="value")


def _integer(part: dict[str, Any], where: str, label: str) -> int:
    for key in _INTEGER_KEYS:
        value = part.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise MalformedPatch(f"{where}: {label} must not be negative", where, code="value")
            return value
    raise MalformedPatch(f"{where}: {label} must be given as valueInteger", where, code="value")


def _parts(parameter: Any, where: str) -> dict[str, tuple[dict[str, Any], str]]:
    if not isinstance(parameter, dict) or parameter.get("name") != "operation":
        raise MalformedPatch(f"{where}: each parameter must be named 'operation'", f"{where}.name", code="structure")
    parts = parameter.get("part")
    if not isinstance(parts, list) or not parts:
        raise MalformedPatch(
            f"{where}: an operation needs its parts (type, path, ...)", f"{where}.part", code="required"
        )
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for number, part in enumerate(parts):
        part_where = f"{where}.part[{number}]"
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise MalformedPatch(f"{part_where}: each part needs a name", part_where, code="required")
        if part["name"] in found:
            raise MalformedPatch(
                f"{part_where}: the part {part['name']!r} is given twice", part_where, code="structure"
            )
        found[part["name"]] = (part, part_where)
    return found


def _kind(parts: dict[str, tuple[dict[str, Any], str]], where: str) -> str:
    if "type" not in parts:
        raise MalformedPatch(
            f'{where}: the operation has no type part; add {{"name": "type", "valueCode": "add"}} '
            "(or insert, delete, replace, move)",
            where,
            code="required",
        )
    kind = _string(parts["type"][0], parts["type"][1], "type")
    if kind not in _PARTS:
        raise MalformedPatch(
            f"{where}: unknown operation type {kind!r}; use add, insert, delete, replace or move",
            parts["type"][1],
            code="code-invalid",
        )
    return kind


def _part_problems(kind: str, parts: dict[str, tuple[dict[str, Any], str]], where: str) -> list[Issue]:
    problems = []
    for name, (_, part_where) in parts.items():
        if name not in _PARTS[kind]:
            hint = _HINTS.get((kind, name), f"{kind} takes only the parts {', '.join(sorted(_PARTS[kind]))}")
            problems.append(Issue("structure", f"{part_where}: unexpected part {name!r}: {hint}", (part_where,)))
    problems.extend(
        Issue("required", f"{where}: {kind} needs a {name!r} part", (where,))
        for name in sorted(_PARTS[kind] - parts.keys())
    )
    return problems


def _checked_path(part: dict[str, Any], where: str, label: str) -> str:
    path = _string(part, where, label)
    try:
        parse_path(path)
    except MalformedPatch as exc:
        raise MalformedPatch(exc.diagnostics, where, path, code=exc.issues[0].code) from exc
    return path


_READERS: Mapping[str, Callable[[dict[str, Any], str, str], Any]] = {
    "path": _checked_path,
    "name": _string,
    "value": lambda part, where, _: parse_value_part(part, where),
    "index": _integer,
    "source": _integer,
    "destination": _integer,
}


def _operation(index: int, parameter: Any) -> FhirPathOperation:
    """One operation, checked whole: every problem of its parts is reported together."""
    where = f"Parameters.parameter[{index}]"
    parts = _parts(parameter, where)
    kind = _kind(parts, where)
    problems = _part_problems(kind, parts, where)
    read: dict[str, Any] = {}
    for label in sorted(_PARTS[kind] & parts.keys() - {"type"}):
        try:
            read[label] = _READERS[label](*parts[label], label)
        except MalformedPatch as exc:
            problems.extend(exc.issues)
    if problems:
        raise MalformedPatch.of(problems)
    return FhirPathOperation(
        index,
        kind,
        read["path"],
        name=read.get("name"),
        value=read.get("value"),
        position=read.get("index"),
        source=read.get("source"),
        destination=read.get("destination"),
    )


def parse_fhirpath_patch(parameters: Any) -> tuple[FhirPathOperation, ...]:
    """Check a FHIRPath Patch Parameters resource completely; MalformedPatch (400) lists every problem, each
    with the part it is in (as HAPI collects them)."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise MalformedPatch("A FHIRPath Patch must be a Parameters resource", "Parameters", code="structure")
    listed = parameters.get("parameter", [])
    if not isinstance(listed, list):
        raise MalformedPatch("Parameters.parameter must be an array", "Parameters.parameter", code="structure")
    operations: list[FhirPathOperation] = []
    problems: list[Issue] = []
    for index, parameter in enumerate(listed):
        try:
            operations.append(_operation(index, parameter))
        except MalformedPatch as exc:
            problems.extend(exc.issues)
    if problems:
        raise MalformedPatch.of(problems)
    return tuple(operations)
