"""Lossless FHIR JSON <-> FHIR XML, and the one safe XML parser of the engine.

XML Patch applies to a resource's XML form, so a JSON resource goes to XML,
is patched, and comes back. The conversion follows the R4 structure (element
order, which elements repeat, primitive types) and keeps what JSON carries:
primitive extensions and ids (`_birthDate`), element ids and extension urls
as attributes, narrative XHTML, contained resources, and decimals with the
digits as written.
"""

from __future__ import annotations

from decimal import InvalidOperation
from typing import Any

from lxml import etree

from worker.patch.errors import InvalidResource, MalformedPatch
from worker.patch.fhir_json import number_from_text
from worker.patch.structure import ElementDef, TypeDef, is_resource_type, type_def

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
MAX_XML_BYTES = 10 * 1024 * 1024
MAX_XML_DEPTH = 100  # FHIR elements; JSON's MAX_NESTING (200) counts a list and an object per element
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})


def _parser() -> etree.XMLParser:
    # No DTD, no entity expansion, no network: XML bombs and XXE cannot work.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )


def parse_xml(data: bytes, what: str) -> etree._Element:
    """Parse untrusted XML safely; MalformedPatch (400) with line and column when it is not acceptable."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedPatch(f"The {what} must be given as bytes", code="structure")
    if len(data) > MAX_XML_BYTES:
        raise MalformedPatch(f"The {what} is larger than {MAX_XML_BYTES} bytes", code="too-costly")
    try:
        root = etree.fromstring(bytes(data), _parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (0, 0)
        raise MalformedPatch(
            f"The {what} is not well-formed XML: {exc.msg} (line {line}, column {column})",
            f"line {line}, column {column}",
            code="structure",
        ) from exc
    except (ValueError, etree.LxmlError) as exc:
        raise MalformedPatch(f"The {what} cannot be read as XML: {exc}", code="structure") from exc
    if root is None:
        raise MalformedPatch(f"The {what} has no root element", code="structure")
    if root.getroottree().docinfo.doctype:
        raise MalformedPatch(
            f"The {what} has a DOCTYPE; DTDs and entity declarations are not accepted "
            "(RFC 5261 <invalid-entity-declaration>)",
            code="security",
        )
    _check_depth(root, what)
    return root


def _check_depth(root: etree._Element, what: str) -> None:
    """One pass over the tree (no recursion), so a deep document is refused before anything walks it recursively."""
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > MAX_XML_DEPTH:
            raise MalformedPatch(f"The {what} is nested deeper than {MAX_XML_DEPTH} elements", code="too-costly")


def _qualified(local: str) -> str:
    return f"{{{FHIR_NS}}}{local}"


def _text(value: Any, fhir_type: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resource_to_xml(resource: dict[str, Any]) -> etree._Element:
    """The FHIR XML element of a JSON resource."""
    kind = str(resource.get("resourceType"))
    tdef = type_def(kind)
    if tdef is None or not is_resource_type(kind):
        raise InvalidResource(f"resourceType {kind!r} is not a FHIR R4 resource type", "resourceType")
    root = etree.Element(_qualified(kind), nsmap={None: FHIR_NS})
    _fill(root, resource, tdef, kind, is_resource=True)
    return root


def _fill(element: etree._Element, value: dict[str, Any], tdef: TypeDef, path: str, is_resource: bool) -> None:
    if not is_resource and "id" in value:
        element.set("id", str(value["id"]))
    if tdef.name == "Extension" and "url" in value:
        element.set("url", str(value["url"]))
    known = {"resourceType"} | ({"id"} if not is_resource else set()) | ({"url"} if tdef.name == "Extension" else set())
    keys = [k for k in tdef.order if k in value or "_" + k in value]
    for key in value:
        base = key.removeprefix("_")
        if base not in known and base not in tdef.order:
            raise InvalidResource(f"{path}.{key}: is not an element of {tdef.name}", f"{path}.{key}")
    for key in keys:
        if key in known:
            continue
        definition = tdef.elements[key]
        items, companions = value.get(key), value.get("_" + key)
        if definition.is_list:
            items = items if isinstance(items, list) else [None] * len(companions or [])
            companions = companions if isinstance(companions, list) else [None] * len(items)
            for index, item in enumerate(items):
                _child(
                    element,
                    definition,
                    item,
                    companions[index] if index < len(companions) else None,
                    f"{path}.{key}[{index}]",
                )
        else:
            _child(element, definition, items, companions, f"{path}.{key}")


def _child(parent: etree._Element, definition: ElementDef, value: Any, extra: Any, path: str) -> None:
    if definition.type == "xhtml":
        parent.append(parse_xml(str(value).encode("utf-8"), f"narrative at {path}"))
        return
    child = etree.SubElement(parent, _qualified(definition.key))
    if definition.is_primitive:
        if value is not None:
            child.set("value", _text(value, definition.type))
        if isinstance(extra, dict):
            element_def = type_def("Element")
            assert element_def is not None
            _fill(child, extra, element_def, path, is_resource=False)
    elif definition.is_resource:
        child.append(resource_to_xml(value))
    elif isinstance(value, dict):
        tdef = type_def(definition.type)
        if tdef is not None:
            _fill(child, value, tdef, path, is_resource=False)


def resource_to_xml_bytes(resource: dict[str, Any]) -> bytes:
    return bytes(etree.tostring(resource_to_xml(resource), encoding="UTF-8", xml_declaration=False))


def _local(element: etree._Element, path: str) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    qname = etree.QName(tag)
    if qname.namespace != FHIR_NS:
        raise InvalidResource(
            f"{path}: element <{qname.localname}> is not in the FHIR namespace ({qname.namespace or 'none'})", path
        )
    return str(qname.localname)


def xml_to_resource(element: etree._Element, path: str = "") -> dict[str, Any]:
    """The JSON resource of a FHIR XML element; InvalidResource (422) names what does not fit."""
    kind = _local(element, path or "/")
    tdef = type_def(kind)
    if tdef is None or not is_resource_type(kind):
        raise InvalidResource(f"<{kind}> is not a FHIR R4 resource type", path or kind)
    resource: dict[str, Any] = {"resourceType": kind}
    _read(element, tdef, resource, path or kind, is_resource=True)
    return resource


def _read(element: etree._Element, tdef: TypeDef, out: dict[str, Any], path: str, is_resource: bool) -> None:
    for name, value in element.attrib.items():
        if name == "id" and not is_resource:
            out["id"] = value
        elif name == "url" and tdef.name == "Extension":
            out["url"] = value
        else:
            raise InvalidResource(f"{path}: attribute {name!r} is not allowed here", f"{path}.{name}")
    if element.text and element.text.strip():
        raise InvalidResource(f"{path}: text content {element.text.strip()[:40]!r} is not allowed in FHIR XML", path)
    for child in element:
        if child.tail and child.tail.strip():
            raise InvalidResource(f"{path}: text content {child.tail.strip()[:40]!r} is not allowed in FHIR XML", path)
        if not isinstance(child.tag, str):
            continue  # comments and processing instructions carry no FHIR content
        if etree.QName(child).namespace == XHTML_NS and tdef.element("div") is not None:
            _put(
                out,
                tdef.elements["div"],
                etree.tostring(child, encoding="unicode", with_tail=False),
                None,
                f"{path}.div",
            )
            continue
        key = _local(child, f"{path}.?")
        definition = tdef.element(key)
        if (
            definition is None
            or key in ("resourceType",)
            or (key == "id" and not is_resource)
            or (key == "url" and tdef.name == "Extension")
        ):
            raise InvalidResource(f"{path}.{key}: is not an element of {tdef.name}", f"{path}.{key}")
        _read_child(child, definition, out, f"{path}.{key}")


def _read_child(child: etree._Element, definition: ElementDef, out: dict[str, Any], path: str) -> None:
    if definition.is_primitive:
        raw = child.get("value")
        value = None if raw is None else _primitive(raw, definition.type, path)
        extra: dict[str, Any] = {}
        attributes = {k: v for k, v in child.attrib.items() if k != "value"}
        stripped = etree.Element(child.tag, attributes)
        stripped.extend(list(child))
        element_def = type_def("Element")
        assert element_def is not None
        _read(stripped, element_def, extra, path, is_resource=False)
        child.extend(list(stripped))
        if value is None and not extra:
            raise InvalidResource(f"{path}: a primitive element needs a value attribute or extensions", path)
        _put(out, definition, value, extra or None, path)
    elif definition.is_resource:
        inner = [c for c in child if isinstance(c.tag, str)]
        if len(inner) != 1:
            raise InvalidResource(f"{path}: must hold exactly one resource", path)
        _put(out, definition, xml_to_resource(inner[0], path), None, path)
    else:
        tdef = type_def(definition.type)
        complex_value: dict[str, Any] = {}
        if tdef is not None:
            _read(child, tdef, complex_value, path, is_resource=False)
        _put(out, definition, complex_value, None, path)


def _primitive(raw: str, fhir_type: str, path: str) -> Any:
    try:
        if fhir_type == "boolean":
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
        if fhir_type in _INTEGERS or fhir_type == "decimal":
            return number_from_text(raw, integer=fhir_type != "decimal")
    except (ValueError, InvalidOperation) as exc:
        raise InvalidResource(f"{path}: {raw!r} is not a valid {fhir_type}", path, code="value") from exc
    return raw


def _put(out: dict[str, Any], definition: ElementDef, value: Any, extra: Any, path: str) -> None:
    key = definition.key
    if not definition.is_list:
        if key in out or "_" + key in out:
            raise InvalidResource(f"{path}: does not repeat, but appears more than once", path, code="structure")
        if value is not None:
            out[key] = value
        if extra is not None:
            out["_" + key] = extra
        return
    # A list of primitives keeps nulls where only extensions exist: FHIR JSON aligns the two arrays.
    items = out.setdefault(key, [])
    items.append(value)
    if extra is not None or "_" + key in out:
        companions = out.setdefault("_" + key, [])
        companions.extend([None] * (len(items) - 1 - len(companions)) + [extra])


def xml_bytes_to_resource(data: bytes) -> dict[str, Any]:
    return xml_to_resource(parse_xml(data, "resource"))
