"""The FHIR patch interaction: choose the format from the media type, apply, enforce the rules.

`parse_patch` checks a request body completely (early 400/415, before any
resource is read); `ParsedPatch.apply_to` applies it to a resource and
enforces what holds after every patch: server-owned and policy-locked
elements unchanged, the result a valid FHIR R4 resource.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lxml import etree

from worker.patch.errors import InvalidResource, MalformedPatch, NotApplicable, UnsupportedPatchFormat, Warnings
from worker.patch.fhir_json import copy_json, loads, nesting_problem
from worker.patch.fhir_xml import parse_xml, resource_to_xml, xml_to_resource
from worker.patch.fhirpath_operations import parse_fhirpath_patch
from worker.patch.fhirpath_patch import apply_parsed_fhirpath_patch
from worker.patch.json_patch import apply_parsed_json_patch, parse_json_patch
from worker.patch.parameter_values import BuildContext
from worker.patch.policy import ElementPolicies, check_changes
from worker.patch.validation import patched_resource_issues
from worker.patch.xml_directives import parse_xml_patch
from worker.patch.xml_patch import apply_parsed_xml_patch

JSON_PATCH = "application/json-patch+json"
XML_PATCH = "application/xml-patch+xml"
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
PATCH_MEDIA_TYPES = (JSON_PATCH, XML_PATCH, FHIR_JSON, FHIR_XML)
_ALIASES = {"application/json": FHIR_JSON, "application/xml": FHIR_XML, "text/xml": FHIR_XML}
_SERVER_ELEMENTS = ("resourceType", "id", "meta")

Transform = Callable[[dict[str, Any], BuildContext], dict[str, Any]]


@dataclass(frozen=True)
class PatchOutcome:
    """The patched resource (a new dict) and warnings (an OperationOutcome) if any."""

    resource: dict[str, Any]
    warnings: dict[str, Any] | None


@dataclass(frozen=True)
class ParsedPatch:
    """A checked patch document, ready to apply to any number of resources."""

    format: str
    transform: Transform
    strict: bool = False

    def apply_to(self, resource: dict[str, Any], policies: ElementPolicies | None = None) -> PatchOutcome:
        ctx = BuildContext(strict=self.strict, warnings=Warnings())
        patched = self.transform(resource, ctx)
        _check_shape(resource, patched)
        check_changes(resource, patched, policies)
        issues = patched_resource_issues(resource, patched)
        if issues:
            raise InvalidResource.of(issues)
        return PatchOutcome(patched, ctx.warnings.outcome())


_JSON_KINDS = {
    str: "string",
    int: "number",
    float: "number",
    Decimal: "number",
    bool: "boolean",
    list: "array",
    type(None): "null",
}


def _check_shape(old: dict[str, Any], new: Any) -> None:
    """A patch may replace the whole document (JSON Patch path ""), but the result must still be a resource."""
    kind = old.get("resourceType")
    if not isinstance(new, dict):
        raise NotApplicable(
            f"The patch would replace the {kind} resource with a JSON {_JSON_KINDS.get(type(new), 'value')}; "
            f"the result must be a {kind} resource (a JSON object)",
            str(kind),
        )
    problem = nesting_problem(new)
    if problem:
        raise NotApplicable(f"The patched {kind} would not be accepted: {problem}", str(kind), code="too-costly")


def media_type(content_type: str) -> str:
    """The patch format a Content-Type names; charset and fhirVersion parameters are allowed."""
    essence, *parameters = [p.strip() for p in (content_type or "").split(";")]
    essence = _ALIASES.get(essence.lower(), essence.lower())
    if essence not in PATCH_MEDIA_TYPES:
        raise UnsupportedPatchFormat(
            f"Content-Type {content_type!r} is not a patch format; use one of {', '.join(PATCH_MEDIA_TYPES)}",
            "Content-Type",
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedPatchFormat(f"Only UTF-8 is accepted, not charset={value.strip()}", "Content-Type")
    return essence


def _json_patch(body: bytes) -> Transform:
    operations = parse_json_patch(loads(body, what="JSON Patch document"))
    return lambda resource, ctx: _drop_emptied_lists(resource, apply_parsed_json_patch(resource, operations))


def _drop_emptied_lists(old: Any, new: Any) -> Any:
    """A list the patch emptied (removing its last item) goes, as FHIRPath Patch's delete does.

    Oracle documents `remove /address/0` of the only address as leaving no address;
    an empty list added on purpose stays, and validation refuses it.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [k for k in new if k in old]:
            if new[key] == [] and isinstance(old[key], list) and old[key]:
                del new[key]
            elif new[key] != old[key]:  # an equal subtree holds no emptied list (compared in C, not walked here)
                _drop_emptied_lists(old[key], new[key])
    elif isinstance(old, list) and isinstance(new, list):
        for before, after in zip(old, new):
            if before != after:
                _drop_emptied_lists(before, after)
    return new


def _xml_patch(body: bytes) -> Transform:
    directives = parse_xml_patch(parse_xml(body, "XML patch"))

    def transform(resource: dict[str, Any], ctx: BuildContext) -> dict[str, Any]:
        patched = xml_to_resource(apply_parsed_xml_patch(resource_to_xml(resource), directives))
        return _keep_unchanged_narrative(resource, patched)

    return transform


def _keep_unchanged_narrative(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """XHTML text read back from XML may differ in form only: keep the original text when the markup is the same."""
    old_text, new_text = old.get("text"), new.get("text")
    if (
        isinstance(old_text, dict)
        and isinstance(new_text, dict)
        and isinstance(old_text.get("div"), str)
        and isinstance(new_text.get("div"), str)
    ):
        if _canonical(old_text["div"]) == _canonical(new_text["div"]):
            new_text["div"] = old_text["div"]
    return new


def _canonical(xhtml: str) -> bytes:
    return bytes(etree.tostring(parse_xml(xhtml.encode(), "narrative"), method="c14n"))


def _parameters(document: Any) -> Transform:
    if isinstance(document, dict) and document.get("resourceType") not in ("Parameters", None):
        return _partial_resource(document)
    operations = parse_fhirpath_patch(document)
    return lambda resource, ctx: apply_parsed_fhirpath_patch(resource, operations, ctx)


def _partial_resource(document: dict[str, Any]) -> Transform:
    """A body of the target's own type with only some elements (NHN's securityLabel form): each given element replaces
    the stored one."""
    given = {k: v for k, v in document.items() if k not in _SERVER_ELEMENTS}
    if not given:
        raise MalformedPatch(
            f"The {document['resourceType']} body names no element to change", document["resourceType"], code="required"
        )

    def transform(resource: dict[str, Any], ctx: BuildContext) -> dict[str, Any]:
        if document["resourceType"] != resource.get("resourceType") or document.get(
            "id", resource.get("id")
        ) != resource.get("id"):
            raise NotApplicable(
                f"The body is {document['resourceType']}/{document.get('id')}, not the patched resource "
                f"{resource.get('resourceType')}/{resource.get('id')}",
                "resourceType",
            )
        patched = copy_json(resource)
        patched.update(copy_json(given))
        return patched  # type: ignore[no-any-return]

    return transform


_PARSERS: Mapping[str, Callable[[bytes], Transform]] = {
    JSON_PATCH: _json_patch,
    XML_PATCH: _xml_patch,
    FHIR_JSON: lambda body: _parameters(loads(body, what="Parameters resource")),
    FHIR_XML: lambda body: _parameters(xml_to_resource(parse_xml(body, "Parameters resource"))),
}


def parse_patch(body: bytes, content_type: str, *, strict: bool = False) -> ParsedPatch:
    """Check a patch request body completely; MalformedPatch (400) or UnsupportedPatchFormat (415)."""
    kind = media_type(content_type)
    try:
        transform = _PARSERS[kind](body)
    except InvalidResource as exc:  # an XML Parameters body that is not a valid Parameters resource
        raise MalformedPatch.of(exc.issues) from exc
    except RecursionError as exc:
        raise MalformedPatch("The patch document is nested too deeply") from exc
    return ParsedPatch(kind, transform, strict)


def apply_patch(
    resource: dict[str, Any],
    body: bytes,
    content_type: str,
    *,
    strict: bool = False,
    policies: ElementPolicies | None = None,
) -> PatchOutcome:
    """Apply a patch request body of any supported media type to a FHIR resource."""
    return parse_patch(body, content_type, strict=strict).apply_to(resource, policies)
