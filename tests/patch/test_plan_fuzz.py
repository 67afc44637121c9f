"""Fuzzing `plan_change` (the whole job step, not only the engine functions) with random structures.

Property: whatever the client sends, planning either gives a change that keeps the resource a resource
(same type and id, a JSON object) or raises a FhirError with a 4xx status and an OperationOutcome naming
the problem; it never raises anything else, never answers 5xx, and never changes its inputs.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.strategies import patients
from worker.errors import FhirError
from worker.model.changes import Existing, plan_change
from worker.model.jobs import Action, JobRequest
from worker.patch.fhir_json import copy_json, dumps

TRIED = {"inputs": 0, "5xx": 0}
words = st.sampled_from(
    [
        "",
        "/",
        "/name",
        "/name/0",
        "/name/-",
        "/id",
        "/meta",
        "/meta/versionId",
        "/text/div",
        "/gender",
        "/multipleBirthInteger",
        "/extension/0/url",
        "/a~1b",
        "/~2",
        "Patient",
        "Patient.name",
        "Patient.text.div",
        "Patient.name.where(family = 'x')",
        "Patient.name.first()",
        "Patient.name.where()",
        "Patient.id",
        "Patient.meta",
        "x(",
        "(((",
        "Patient.name[0].given[9]",
        "Patient.mod",
        "%resource",
    ]
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("1e400"), Decimal("-0.0"), Decimal("1E+20")]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12), words)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.one_of(words, st.text(max_size=6)), inner, max_size=5)
    ),
    max_leaves=25,
)
json_patch_ops = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]), "path": words},
        optional={"value": values, "from": words},
    ),
    max_size=4,
)
fhirpath_parts = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["type", "path", "name", "value", "index", "x"])},
        optional={
            "valueString": words,
            "valueCode": st.sampled_from(["add", "insert", "delete", "replace", "move", "jump"]),
            "valueInteger": numbers,
            "value": values,
            "part": values,
            "valueHumanName": values,
        },
    ),
    max_size=5,
)
parameters = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Parameters", "Patient", "Bundle"])},
    optional={
        "parameter": st.one_of(
            values,
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["operation", "op"])}, optional={"part": fhirpath_parts}
                ),
                max_size=3,
            ),
        )
    },
)
xml_bodies = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            '<Patch><add sel="/Patient"><gender value="male"/></add></Patch>',
            '<Patch xmlns="http://hl7.org/fhir"><remove sel="/Patient"/></Patch>',
            '<Patch><replace sel="/*/id/@value">x</replace></Patch>',
            '<Patch><add sel="/*" pos="before"><x/></add></Patch>',
        ]
    ),
)
bodies = st.one_of(
    st.tuples(st.just("application/json-patch+json"), st.one_of(json_patch_ops, values).map(dumps)),
    st.tuples(st.sampled_from(["application/fhir+json", "application/json"]), st.one_of(parameters, values).map(dumps)),
    st.tuples(st.sampled_from(["application/xml-patch+xml", "application/fhir+xml"]), xml_bodies),
    st.tuples(st.sampled_from(["text/plain", "", "application/json-patch+json; charset=latin1"]), st.text(max_size=10)),
    st.tuples(st.sampled_from(["application/json-patch+json", "application/fhir+json"]), st.binary(max_size=30)),
)
actions = st.sampled_from([Action.PATCH, Action.PATCH, Action.PATCH, Action.CREATE, Action.UPDATE, Action.DELETE])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(patients, bodies, actions, st.one_of(st.none(), st.integers(1, 3)), st.booleans())
def test_plan_change_only_raises_client_errors(
    resource: dict[str, Any], body: tuple[str, Any], action: Action, if_match: int | None, deleted: bool
) -> None:
    content_type, text = body
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if action in (Action.CREATE, Action.UPDATE):
        content_type = "application/fhir+json"
    request = JobRequest(action, "Patient", "p1", raw, content_type, if_match)
    existing = Existing(2, None if deleted else resource)
    before = copy_json(resource)
    TRIED["inputs"] += 1
    try:
        planned = plan_change(request, existing, {})
    except FhirError as error:
        TRIED["5xx"] += error.status >= 500
        assert 400 <= error.status < 500, error.outcome
        issues = error.outcome["issue"]
        assert issues and all(i["diagnostics"] and i["severity"] == "error" for i in issues)
        json.dumps(error.outcome, default=str)  # an outcome is always serialisable
    else:
        if planned.resource is not None:
            assert isinstance(planned.resource, dict)
            assert planned.resource.get("resourceType") == "Patient" and planned.resource.get("id") == "p1"
        if not planned.write:
            assert planned.status == 200 and (planned.resource is None or planned.resource == resource)
    assert resource == before, "the stored resource was modified"
