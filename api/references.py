"""`urn:uuid:` references inside a transaction, rewritten to the `Type/id` of the entry they name (FHIR's rule).

An entry's `fullUrl` may be a `urn:uuid:`; any reference to it elsewhere in the transaction becomes the
entry's resource, `Type/id` (a POST entry gets its id here, before any entry is parsed, so the reference and
the created resource agree). References are rewritten where a reference can be:
- in resource bodies (PUT, POST) and FHIRPath Patch `Parameters`: every `reference` of a Reference;
- in a FHIRPath Patch operation whose path ends in `.reference`: its string value;
- in a JSON Patch: every `reference` inside a value, and a string value whose path ends in `/reference`;
- in an XML Patch: the `value` of a `reference` element, and the text of a directive on `reference/@value`.
A `urn:uuid:` reference that names no entry is 400, naming the entry. Pure: the entries are never changed.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from lxml import etree

from api.entries import target
from worker.errors import FhirError, InvalidRequest
from worker.patch.fhir_json import dumps, loads
from worker.patch.fhir_xml import parse_xml

URN_UUID = "urn:uuid:"
Names = dict[str, str]  # fullUrl -> Type/id


def full_urls(entries: list[Any]) -> tuple[Names, dict[int, str]]:
    """The `urn:uuid:` fullUrls of the entries, each with the `Type/id` it stands for, and the ids given to the
    POST entries (by entry index). An entry too malformed to name is left for entry_request to refuse."""
    names: Names = {}
    created: dict[int, str] = {}
    for index, entry in enumerate(entries):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            continue
        method = str(request.get("method", "")).upper()
        if method == "POST":
            created[index] = str(uuid.uuid4())
        full_url = entry.get("fullUrl")
        if not isinstance(full_url, str) or not full_url.startswith(URN_UUID):
            continue
        try:
            resource_type, resource_id = target(str(request.get("url", "")).split("?")[0])
        except FhirError:
            continue
        resource_id = created.get(index, resource_id)
        if resource_id is not None:
            names[full_url] = f"{resource_type}/{resource_id}"
    return names, created


def rewritten(entry: Any, names: Names, where: str) -> Any:
    """The entry with its `urn:uuid:` references rewritten (a new object; the same one when it has none)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        return entry
    resource = entry["resource"]
    if resource.get("resourceType") == "Binary":
        return {**entry, "resource": _binary(resource, names, where)}
    return {**entry, "resource": _json(resource, names, where)}


def _name(value: str, names: Names, where: str) -> str:
    if not value.startswith(URN_UUID):
        return value
    if value not in names:
        raise InvalidRequest(
            f"{where}: the reference {value!r} names no entry of this transaction (no entry has that fullUrl)", where
        )
    return names[value]


def _json(value: Any, names: Names, where: str) -> Any:
    """Every `reference` string of a Reference, and a FHIRPath Patch operation's value on a `.reference` path."""
    if isinstance(value, list):
        return [_json(item, names, where) for item in value]
    if not isinstance(value, dict):
        return value
    found = {key: _json(item, names, where) for key, item in value.items()}
    if isinstance(found.get("reference"), str):
        found["reference"] = _name(found["reference"], names, where)
    if found.get("name") == "operation" and isinstance(found.get("part"), list):
        found["part"] = _operation_parts(found["part"], names, where)
    return found


def _operation_parts(parts: list[Any], names: Names, where: str) -> list[Any]:
    paths = [p.get("valueString") for p in parts if isinstance(p, dict) and p.get("name") == "path"]
    if not paths or not str(paths[0]).endswith(".reference"):
        return parts
    return [
        {k: _name(v, names, where) if k.startswith("value") and isinstance(v, str) else v for k, v in p.items()}
        if isinstance(p, dict) and p.get("name") == "value"
        else p
        for p in parts
    ]


def _binary(resource: dict[str, Any], names: Names, where: str) -> dict[str, Any]:
    """A Binary patch: decoded, rewritten, encoded again (left as it is when it holds no urn:uuid at all)."""
    try:
        data = base64.b64decode(str(resource.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        return resource  # entry_request says what is wrong with it
    if URN_UUID.encode() not in data:
        return resource
    kind = str(resource.get("contentType", "")).split(";")[0].strip().lower()
    patched = _xml_patch(data, names, where) if kind.endswith("xml") else _json_patch(data, names, where)
    return {**resource, "data": base64.b64encode(patched).decode()}


def _json_patch(data: bytes, names: Names, where: str) -> bytes:
    operations = loads(data, what=f"{where} JSON Patch")
    if not isinstance(operations, list):
        return data
    out = []
    for operation in operations:  # each rewritten operation is a new dict: the parsed input stays as it was
        if isinstance(operation, dict) and "value" in operation:
            value = _json(operation["value"], names, where)
            if isinstance(value, str) and str(operation.get("path", "")).endswith("/reference"):
                value = _name(value, names, where)
            operation = {**operation, "value": value}
        out.append(operation)
    return dumps(out).encode()


def _xml_patch(data: bytes, names: Names, where: str) -> bytes:
    root = parse_xml(data, f"{where} XML Patch")
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        if etree.QName(element).localname == "reference" and element.get("value") is not None:
            element.set("value", _name(str(element.get("value")), names, where))
        if str(element.get("sel", "")).endswith("reference/@value") and element.text:
            element.text = _name(element.text.strip(), names, where)
    return bytes(etree.tostring(root.getroottree(), encoding="UTF-8", xml_declaration=True))
