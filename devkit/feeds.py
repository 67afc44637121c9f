"""A generated bulk feed: valid lines in the three patch formats, and invalid lines of several kinds.

Line n targets resource `org{n % resources}`; every 1/invalid-th line is broken, in turn in each way of INVALID.
Valid line n adds the alias `alias-n`, so a resource's final aliases tell which lines applied, and in what order.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

INVALID = [
    lambda r: "{not json",
    lambda r: json.dumps(
        {
            "request": {"method": "PATCH", "url": f"Organization/{r}"},
            "resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "eA=="},
        }
    ),
    lambda r: json.dumps(
        {"request": {"method": "PATCH", "url": f"Nonsense/{r}"}, "resource": {"resourceType": "Parameters"}}
    ),
    lambda r: json.dumps(
        {
            "request": {"method": "PATCH", "url": "Organization/does-not-exist"},
            "resource": _binary("application/json-patch+json", '[{"op":"add","path":"/active","value":true}]'),
        }
    ),
    lambda r: json.dumps(
        {
            "request": {"method": "PATCH", "url": f"Organization/{r}"},
            "resource": _binary("application/json-patch+json", '[{"op":"replace","path":"/nosuch","value":1}]'),
        }
    ),
]


def _binary(content_type: str, patch: str) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(patch.encode()).decode()}


def valid_line(n: int, resource: str) -> str:
    value = f"alias-{n}"
    kind = n % 3
    if kind == 0:
        parts = [
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "Organization"},
            {"name": "name", "valueString": "alias"},
            {"name": "value", "valueString": value},
        ]
        body: dict[str, Any] = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}
    elif kind == 1:
        body = _binary("application/json-patch+json", json.dumps([{"op": "add", "path": "/alias/-", "value": value}]))
    else:
        body = _binary(
            "application/xml-patch+xml",
            f'<Patch xmlns="http://hl7.org/fhir"><add sel="/Organization"><alias value="{value}"/></add></Patch>',
        )
    return json.dumps({"request": {"method": "PATCH", "url": f"Organization/{resource}"}, "resource": body})


def is_invalid(n: int, invalid: float) -> bool:
    every = round(1 / invalid) if invalid else 0
    return bool(every) and n % every == 0


def feed_lines(lines: int, resources: int, invalid: float) -> Iterator[str]:
    """The feed, one line at a time (never held whole)."""
    for n in range(1, lines + 1):
        resource = f"org{n % resources}"
        yield invalid_line(n, resource, invalid) if is_invalid(n, invalid) else valid_line(n, resource)


def invalid_kind(n: int, invalid: float) -> int:
    return (n // round(1 / invalid)) % len(INVALID)


def invalid_line(n: int, resource: str, invalid: float) -> str:
    return str(INVALID[invalid_kind(n, invalid)](resource))
