"""Engine throughput on one core: a 5-operation patch on a ~3 KB Organization, per format.

Prints JSON: patches per second including validation, and the time per patch
split into parse (checking the patch document), apply and validate (rules
after every patch: server-owned and policy elements, R4 validity).

    .venv/bin/python bench/engine.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from worker.patch.fhir_json import dumps, loads
from worker.patch.interaction import ParsedPatch, parse_patch
from worker.patch.parameter_values import BuildContext
from worker.patch.policy import check_changes
from worker.patch.validation import patched_resource_issues

ORGANIZATION: dict[str, Any] = {
    "resourceType": "Organization",
    "id": "org-1",
    "meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z"},
    "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": f"1{n:08d}"} for n in range(4)],
    "active": True,
    "type": [
        {
            "coding": [
                {
                    "system": "https://mos.esante.gouv.fr/NOS/TRE_R66",
                    "code": f"C{n}",
                    "display": "Etablissement de santé " + "x" * 20,
                }
            ]
        }
        for n in range(3)
    ],
    "name": "Centre Hospitalier Universitaire de Exemple-sur-Mer",
    "alias": ["CHU Exemple", "Hôpital Nord"],
    "telecom": [
        {"system": s, "value": v, "use": "work"}
        for s, v in [("phone", "0102030405"), ("fax", "0102030406"), ("email", "contact@chu.example")]
    ],
    "address": [
        {
            "use": "work",
            "line": ["1 avenue de la République", "Bâtiment A"],
            "city": "Exemple-sur-Mer",
            "postalCode": "99000",
            "country": "FRA",
        }
        for _ in range(2)
    ],
    "contact": [
        {
            "purpose": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/contactentity-type", "code": "ADMIN"}]
            },
            "name": {"family": "Dupont", "given": ["Jeanne"]},
            "telecom": [{"system": "email", "value": "j.dupont@chu.example"}],
        }
        for _ in range(3)
    ],
    "extension": [
        {"url": f"https://interop.esante.gouv.fr/ig/fhir/ror/StructureDefinition/ext-{n}", "valueString": "v" * 40}
        for n in range(4)
    ],
}

JSON_PATCH = [
    {"op": "test", "path": "/active", "value": True},
    {"op": "replace", "path": "/name", "value": "CHU de Exemple"},
    {"op": "add", "path": "/alias/-", "value": "CHU Sud"},
    {"op": "replace", "path": "/telecom/0/value", "value": "0199999999"},
    {"op": "remove", "path": "/address/1"},
]
XML_PATCH = """<Patch xmlns="http://hl7.org/fhir">
  <replace sel="/Organization/name/@value">CHU de Exemple</replace>
  <add sel="/Organization/alias[2]" pos="after"><alias value="CHU Sud"/></add>
  <replace sel="/Organization/telecom[1]/value/@value">0199999999</replace>
  <remove sel="/Organization/address[2]"/>
  <replace sel="/Organization/active/@value">true</replace>
</Patch>"""


def _op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    listed = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    return {"name": "operation", "part": listed + [{"name": k, **v} for k, v in parts.items()]}


FHIRPATH_PATCH = {
    "resourceType": "Parameters",
    "parameter": [
        _op("replace", "Organization.name", value={"valueString": "CHU de Exemple"}),
        _op("add", "Organization", name={"valueString": "alias"}, value={"valueString": "CHU Sud"}),
        _op("replace", "Organization.telecom.where(system='phone').value", value={"valueString": "0199999999"}),
        _op("delete", "Organization.address[1]"),
        _op(
            "insert",
            "Organization.identifier",
            index={"valueInteger": 0},
            value={"valueIdentifier": {"system": "urn:x", "value": "9"}},
        ),
    ],
}

FORMATS: dict[str, tuple[str, bytes]] = {
    "fhirpath_patch": ("application/fhir+json", dumps(FHIRPATH_PATCH).encode()),
    "json_patch": ("application/json-patch+json", dumps(JSON_PATCH).encode()),
    "xml_patch": ("application/xml-patch+xml", XML_PATCH.encode()),
}
TARGETS = {"fhirpath_patch": 1000, "json_patch": 1500, "xml_patch": 500}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def measure(name: str, seconds: float) -> dict[str, Any]:
    content_type, body = FORMATS[name]
    resource = loads(dumps(ORGANIZATION).encode())
    totals = {"parse": 0.0, "apply": 0.0, "validate": 0.0}
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        parsed, t_parse = _timed(lambda: parse_patch(body, content_type))
        assert isinstance(parsed, ParsedPatch)
        patched, t_apply = _timed(lambda p=parsed: p.transform(resource, BuildContext(strict=False)))
        issues, t_validate = _timed(
            lambda p=patched: (check_changes(resource, p), patched_resource_issues(resource, p))[1]
        )
        assert not issues, issues
        totals["parse"] += t_parse
        totals["apply"] += t_apply
        totals["validate"] += t_validate
        count += 1
    per_patch = sum(totals.values()) / count
    return {
        "patches_per_second": round(1 / per_patch),
        "target_per_second": TARGETS[name],
        "meets_target": 1 / per_patch >= TARGETS[name],
        "microseconds_per_patch": {k: round(v / count * 1e6, 1) for k, v in totals.items()}
        | {"total": round(per_patch * 1e6, 1)},
        "patches_measured": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per format")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    for name in FORMATS:
        measure(name, 0.3)  # warm caches (compiled paths, structure tables)
    results = {name: measure(name, args.seconds) for name in FORMATS}
    print(
        json.dumps(
            {
                "benchmark": "engine",
                "resource_bytes": len(dumps(ORGANIZATION)),
                "operations_per_patch": 5,
                "python": platform.python_version(),
                "cores_used": 1,
                "formats": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
