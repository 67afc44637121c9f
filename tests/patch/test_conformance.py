"""Conformance tables (tests/patch/data/*.yaml): every operation, rule and error kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from worker.patch import PatchError, apply_fhirpath_patch, apply_json_patch, apply_patch, apply_xml_patch
from worker.patch.diff import DIFFERS, FHIRPATH_PATCH_MEDIA, JSON_PATCH_MEDIA, diff_as, without_meta
from worker.patch.errors import Warnings
from worker.patch.fhir_json import copy_json, dumps, loads

DATA = Path(__file__).parent / "data"


def table(name: str) -> list[Any]:
    cases = yaml.safe_load((DATA / name).read_text())
    return [pytest.param(case, id=case["name"]) for case in cases]


def _decimals(value: Any) -> Any:
    """YAML floats become exact decimals, as the engine reads JSON."""
    return loads(dumps(value).encode()) if value is not None else None


def check_error(error: PatchError, expected: dict[str, Any]) -> None:
    issue = error.outcome["issue"][0]
    assert error.status == expected["status"], error.outcome
    assert error.outcome["resourceType"] == "OperationOutcome"
    if "code" in expected:
        assert issue["code"] == expected["code"], error.outcome
    if "condition" in expected:
        assert f"<{expected['condition']}>" in issue["diagnostics"], error.outcome
    if "diagnostics" in expected:
        assert expected["diagnostics"] in issue["diagnostics"], error.outcome
    if "expression" in expected:
        assert issue["expression"][: len(expected["expression"])] == expected["expression"], error.outcome
    if "issues" in expected:
        assert len(error.outcome["issue"]) == expected["issues"], error.outcome
    if "each" in expected:  # every issue, in order: [code, first expression]
        assert [[i["code"], i["expression"][0]] for i in error.outcome["issue"]] == expected["each"], error.outcome
    assert issue["diagnostics"] and issue["severity"] == "error"


@pytest.mark.parametrize("case", table("json_patch_rfc6902.yaml"))
def test_json_patch(case: dict[str, Any]) -> None:
    document = copy_json(case["document"])
    if "error" in case:
        with pytest.raises(PatchError) as caught:
            apply_json_patch(document, case["patch"])
        check_error(caught.value, case["error"])
    else:
        assert apply_json_patch(document, case["patch"]) == case["expected"]
    assert document == case["document"], "the input document was modified"


def _c14n(xml: str) -> bytes:
    """The canonical form of the whole document, with comments and PIs beside the root element."""
    return bytes(etree.tostring(etree.fromstring(xml.encode()).getroottree(), method="c14n"))


@pytest.mark.parametrize("case", table("xml_patch_rfc5261.yaml"))
def test_xml_patch(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(PatchError) as caught:
            apply_xml_patch(case["document"].encode(), case["patch"].encode())
        check_error(caught.value, case["error"])
    else:
        result = apply_xml_patch(case["document"].encode(), case["patch"].encode())
        assert _c14n(result.decode()) == _c14n(case["expected"])


def parameters(ops: list[dict[str, Any]]) -> dict[str, Any]:
    built = []
    for op in ops:
        parts: list[dict[str, Any]] = [
            {"name": "type", "valueCode": op["type"]},
            {"name": "path", "valueString": op["path"]},
        ]
        if "name" in op:
            parts.append({"name": "name", "valueString": op["name"]})
        if "value" in op:
            parts.append({"name": "value", **op["value"]})
        for key in ("index", "source", "destination"):
            if key in op:
                parts.append({"name": key, "valueInteger": op[key]})
        built.append({"name": "operation", "part": parts})
    return {"resourceType": "Parameters", "parameter": built}


@pytest.mark.parametrize("case", table("fhirpath_patch.yaml"))
def test_fhirpath_patch(case: dict[str, Any]) -> None:
    resource = _decimals(case["resource"])
    before = copy_json(resource)
    patch = _decimals(case.get("parameters") or parameters(case["ops"]))
    warnings = Warnings()
    if "error" in case:
        with pytest.raises(PatchError) as caught:
            apply_fhirpath_patch(resource, patch, strict=case.get("strict", False), warnings=warnings)
        check_error(caught.value, case["error"])
    else:
        assert apply_fhirpath_patch(resource, patch, strict=case.get("strict", False), warnings=warnings) == _decimals(
            case["expected"]
        )
        found = [i.diagnostics for i in warnings.issues]
        for expected in case.get("warnings", []):
            assert any(expected in message for message in found), found
        if not case.get("warnings"):
            assert not found
    assert resource == before, "the input resource was modified"


@pytest.mark.parametrize("case", table("fhir_rules.yaml"))
def test_fhir_rules(case: dict[str, Any]) -> None:
    resource = loads(case["resource_json"].encode()) if "resource_json" in case else _decimals(case["resource"])
    before = copy_json(resource)
    body, content_type, policies = case["body"].encode(), case["content_type"], case.get("policies")
    if "error" in case:
        with pytest.raises(PatchError) as caught:
            apply_patch(resource, body, content_type, policies=policies)
        check_error(caught.value, case["error"])
    else:
        outcome = apply_patch(resource, body, content_type, policies=policies)
        if "expected_json" in case:
            assert dumps(outcome.resource) == case["expected_json"]
        else:
            assert outcome.resource == _decimals(case["expected"])
    assert resource == before, "the input resource was modified"


_BEFORE_AFTER = [
    pytest.param(case, id=f"{name}: {case['name']}")
    for name in ("fhirpath_patch.yaml", "fhir_rules.yaml")
    for case in yaml.safe_load((DATA / name).read_text())
    if isinstance(case.get("resource"), dict) and isinstance(case.get("expected"), dict)
]


@pytest.mark.parametrize("case", _BEFORE_AFTER)
@pytest.mark.parametrize("media", sorted(DIFFERS))
def test_a_diff_of_each_before_and_after_turns_one_into_the_other(case: dict[str, Any], media: str) -> None:
    """The $diff contract over the corpus: for every case with a result, in both formats, with and without meta."""
    old, new = _decimals(case["resource"]), _decimals(case["expected"])
    apply = {FHIRPATH_PATCH_MEDIA: apply_fhirpath_patch, JSON_PATCH_MEDIA: apply_json_patch}[media]
    for include_meta in (False, True):
        change = diff_as(media, old, new, include_meta)
        expected = new if include_meta else without_meta(new)
        assert apply(old if include_meta else without_meta(old), change) == expected
