"""Hypothesis strategies for FHIR resources, shared by the property and fuzz tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import strategies as st

text = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789éà-", min_size=1, max_size=12)
codes = st.sampled_from(["a", "b", "c", "x1", "y-2"])
decimals = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False, allow_infinity=False)
dates = st.dates(min_value=date(1000, 1, 1)).map(lambda d: d.isoformat())


def some(required: dict[str, Any], **optional: Any) -> st.SearchStrategy[dict[str, Any]]:
    """An object with its required fields and any of the optional ones (never empty, never filtered)."""
    return st.fixed_dictionaries(required, optional=optional)


extension = st.one_of(
    some({"url": st.sampled_from(["http://e/a", "http://e/b"]), "valueString": text}),
    some({"url": st.sampled_from(["http://e/c"]), "valueDecimal": decimals}),
)
human_name = some(
    {"family": text}, given=st.lists(text, min_size=1, max_size=3), use=st.sampled_from(["official", "usual"])
)
identifier = some({"value": text}, system=st.sampled_from(["urn:a", "urn:b"]))
address = some({"city": text}, line=st.lists(text, min_size=1, max_size=2), postalCode=codes)
telecom = some({"value": text}, system=st.sampled_from(["phone", "email"]))


def _with_primitive_extension(patient: dict[str, Any], ext: list[dict[str, Any]]) -> dict[str, Any]:
    if "birthDate" in patient and ext:
        patient = {**patient, "_birthDate": {"extension": ext}}
    return patient


patients = st.builds(
    _with_primitive_extension,
    some(
        {},
        active=st.booleans(),
        gender=st.sampled_from(["male", "female", "other", "unknown"]),
        birthDate=dates,
        name=st.lists(human_name, min_size=1, max_size=3),
        identifier=st.lists(identifier, min_size=1, max_size=3),
        address=st.lists(address, min_size=1, max_size=2),
        telecom=st.lists(telecom, min_size=1, max_size=3),
        extension=st.lists(extension, min_size=1, max_size=2),
        multipleBirthInteger=st.integers(0, 5),
        contact=st.lists(
            some({"name": human_name}, telecom=st.lists(telecom, min_size=1, max_size=2)), min_size=1, max_size=2
        ),
    ).map(lambda d: {"resourceType": "Patient", "id": "p1", **d}),
    st.lists(extension, max_size=2),
)
