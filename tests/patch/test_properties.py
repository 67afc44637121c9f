"""Property tests (hypothesis): no mutation, diff/apply round trip, lossless XML, only PatchError."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.strategies import decimals, patients, text
from worker.patch import (
    PATCH_MEDIA_TYPES,
    PatchError,
    apply_fhirpath_patch,
    apply_json_patch,
    apply_patch,
    apply_xml_patch,
    diff_resources,
)
from worker.patch.diff import JSON_PATCH_MEDIA, diff_as, without_meta
from worker.patch.fhir_json import copy_json, dumps
from worker.patch.fhir_xml import parse_xml, resource_to_xml_bytes, xml_bytes_to_resource
from worker.patch.validation import resource_issues

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | decimals,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(patients, patients)
def test_diff_then_apply_gives_the_new_resource(old: dict[str, Any], new: dict[str, Any]) -> None:
    old_copy, new_copy = copy_json(old), copy_json(new)
    patch = diff_resources(old, new)
    assert apply_fhirpath_patch(old, patch) == new
    assert old == old_copy and new == new_copy


@FAST
@given(patients)
def test_diff_of_equal_resources_is_empty(resource: dict[str, Any]) -> None:
    assert diff_resources(resource, copy_json(resource))["parameter"] == []


@FAST
@given(patients)
def test_xml_round_trip_is_lossless(resource: dict[str, Any]) -> None:
    assert xml_bytes_to_resource(resource_to_xml_bytes(resource)) == resource


def test_xml_round_trip_keeps_decimal_digits() -> None:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": Decimal("1.50")},
    }
    assert dumps(xml_bytes_to_resource(resource_to_xml_bytes(resource))) == dumps(resource)


@FAST
@given(
    patients,
    st.lists(
        st.fixed_dictionaries(
            {
                "op": st.sampled_from(["add", "remove", "replace", "test", "move", "copy"]),
                "path": st.sampled_from(["/name/0", "/name/-", "/gender", "/x", "", "/identifier/0/value"]),
                "from": st.sampled_from(["/name/0", "/gender", "/zz"]),
                "value": json_values,
            }
        ),
        max_size=4,
    ),
)
def test_json_patch_never_mutates_and_only_raises_patch_error(resource: dict[str, Any], operations: list[Any]) -> None:
    before = copy_json(resource)
    try:
        result = apply_json_patch(resource, operations)
    except PatchError as exc:
        assert exc.status in (400, 422) and exc.outcome["issue"][0]["diagnostics"]
    else:
        assert result == apply_json_patch(copy_json(before), operations), "the same patch gives the same result"
        if all(op["op"] == "test" for op in operations):
            assert result == before, "a patch of tests only changes nothing"
    assert resource == before


@FAST
@given(patients, st.binary(max_size=200), st.sampled_from(PATCH_MEDIA_TYPES))
def test_random_bytes_only_raise_patch_error(resource: dict[str, Any], body: bytes, content_type: str) -> None:
    before = copy_json(resource)
    try:
        apply_patch(resource, body, content_type)
    except PatchError as exc:
        assert exc.status in (400, 415, 422) and exc.outcome["issue"]
    assert resource == before


@FAST
@given(patients, json_values, st.sampled_from(PATCH_MEDIA_TYPES[::2]))
def test_random_structures_only_raise_patch_error(resource: dict[str, Any], structure: Any, content_type: str) -> None:
    try:
        outcome = apply_patch(resource, dumps(structure).encode(), content_type)
    except PatchError as exc:
        assert exc.status in (400, 415, 422)
    else:  # whatever was accepted leaves a valid resource, the same one
        assert outcome.resource["resourceType"] == "Patient" and outcome.resource.get("id") == resource.get("id")
        assert resource_issues(outcome.resource) == []


parts = st.fixed_dictionaries(
    {"name": st.sampled_from(["type", "path", "name", "value", "index", "source", "destination", "x"])},
    optional={
        "valueString": st.sampled_from(
            ["add", "delete", "Patient", "Patient.name", "Patient.name[0].given", "gender", "((", ""]
        ),
        "valueCode": st.sampled_from(["replace", "insert", "move", "male"]),
        "valueInteger": st.integers(-1, 3),
        "part": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["family", "given", "bogus"]), "valueString": text}),
            max_size=2,
        ),
    },
)


@FAST
@given(
    patients,
    st.lists(st.fixed_dictionaries({"name": st.just("operation"), "part": st.lists(parts, max_size=5)}), max_size=3),
)
def test_random_fhirpath_patches_only_raise_patch_error(resource: dict[str, Any], operations: list[Any]) -> None:
    before = copy_json(resource)
    try:
        apply_patch(
            resource, dumps({"resourceType": "Parameters", "parameter": operations}).encode(), "application/fhir+json"
        )
    except PatchError as exc:
        assert exc.status in (400, 422)
    assert resource == before


@FAST
@given(st.binary(max_size=300))
def test_random_xml_patches_only_raise_patch_error(body: bytes) -> None:
    try:
        result = apply_xml_patch(b"<doc><a/></doc>", body)
    except PatchError as exc:
        assert exc.status in (400, 415, 422) and exc.outcome["issue"][0]["diagnostics"]
    else:
        assert parse_xml(result, "result") is not None, "a patched document is well-formed XML"


def test_diff_writes_keyword_element_names_that_its_own_parser_reads_back() -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'
    old = {"resourceType": "Patient", "id": "p1", "text": {"status": "generated", "div": div.format("a")}}
    new = {"resourceType": "Patient", "id": "p1", "text": {"status": "generated", "div": div.format("b")}}
    patch = diff_resources(old, new)
    paths = [p["valueString"] for op in patch["parameter"] for p in op["part"] if p["name"] == "path"]
    assert any(path.endswith(".div") or path == "Patient.text" for path in paths), paths
    assert apply_fhirpath_patch(old, patch) == new


@FAST
@given(patients, patients, st.booleans())
def test_json_patch_diff_then_apply_gives_the_new_resource(
    old: dict[str, Any], new: dict[str, Any], include_meta: bool
) -> None:
    old_copy, new_copy = copy_json(old), copy_json(new)
    change = diff_as(JSON_PATCH_MEDIA, old, new, include_meta)
    expected = new if include_meta else without_meta(new)
    assert apply_json_patch(old if include_meta else without_meta(old), change) == expected
    assert old == old_copy and new == new_copy
