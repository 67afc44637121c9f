"""XML Patch (RFC 5261) on any XML document, on lxml.

The patch's root may be any element (RFC 5261's `<diff>`, FHIR's `<Patch>`);
its element children are `add`, `replace` and `remove` directives. Selectors
are absolute XPath location paths; prefixes resolve against the directive's
in-scope namespaces, unprefixed names against the patch's default namespace
(as the RFC says, unlike plain XPath 1.0), and `f` means the FHIR namespace
when the patch does not declare it. Every directive is checked before the
document is touched. Failures carry the RFC's error condition name (section
5.1): invalid-attribute-value, invalid-character-set, invalid-diff-format,
invalid-entity-declaration, invalid-namespace-prefix, invalid-namespace-uri,
invalid-node-types, invalid-patch-directive, invalid-root-element-operation,
invalid-xml-prolog-operation, invalid-whitespace-directive and unlocated-node
(also for a selector matching several nodes), plus invalid-xpath for a
selector that is not XPath. `id()` is supported for `xml:id` attributes (the
only IDs without a DTD, and DTDs are refused), so unsupported-id-function and
unsupported-xml-id never arise. Comments and processing instructions beside
the root element are patched like any other node.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from lxml import etree

from worker.patch.errors import (
    ElementExists,
    MalformedPatch,
    MultipleMatches,
    NotApplicable,
    TargetNotFound,
)
from worker.patch.fhir_xml import parse_xml
from worker.patch.xml_directives import (
    TYPE_ATTRIBUTE,
    XmlDirective,
    fail,
    namespaces_of,
    parse_xml_patch,
)
from worker.patch.xml_namespaces import redeclare, remove_namespace, replace_namespace

_Content = list[Any]  # strings (text nodes) and lxml nodes, in document order


def _target(tree: etree._ElementTree, d: XmlDirective) -> Any:
    try:
        found = d.compiled(tree)
    except etree.XPathEvalError as exc:
        raise fail(
            MalformedPatch,
            "invalid-xpath",
            f"the selector {d.selector!r} cannot be evaluated: {exc}",
            d.where,
            d.selector,
        ) from exc
    if not isinstance(found, list):
        raise fail(
            NotApplicable,
            "invalid-node-types",
            f"the selector {d.selector!r} selects a value, not a node",
            d.where,
            d.selector,
        )
    if not found:
        raise fail(
            TargetNotFound, "unlocated-node", f"the selector {d.selector!r} matches no node", d.where, d.selector
        )
    if len(found) > 1:
        raise fail(
            MultipleMatches,
            "unlocated-node",
            f"the selector {d.selector!r} matches {len(found)} nodes; it must match exactly one",
            d.where,
            d.selector,
        )
    return found[0]


def _is_element(node: Any) -> bool:
    return isinstance(node, etree._Element) and isinstance(node.tag, str)


def _patch_content(d: XmlDirective) -> _Content:
    items: _Content = [d.directive.text] if d.directive.text else []
    for child in d.directive:
        items.append(copy.deepcopy(child))
        items[-1].tail = None
        if child.tail:
            items.append(child.tail)
    return items


def _content(parent: etree._Element) -> _Content:
    items: _Content = [parent.text] if parent.text else []
    for child in parent:
        items.append(child)
        if child.tail:
            items.append(child.tail)
    return items


def _set_content(parent: etree._Element, items: _Content) -> None:
    for child in list(parent):
        parent.remove(child)
    parent.text, last = None, None
    for item in items:
        if isinstance(item, str):
            if last is None:
                parent.text = (parent.text or "") + item
            else:
                last.tail = (last.tail or "") + item
        else:
            item.tail = None
            parent.append(item)
            last = item


def _position(node: Any) -> tuple[etree._Element, int]:
    """(parent, index in the parent's content list) of an element, comment, PI or text node."""
    if isinstance(node, etree._ElementUnicodeResult):
        owner = node.getparent()
        if node.is_text:
            return owner, 0
        parent = owner.getparent()
        items = _content(parent)
        return parent, next(i for i, item in enumerate(items) if item is owner) + 1
    parent = node.getparent()
    if parent is None:
        raise fail(NotApplicable, "invalid-root-element-operation", "the root element has no siblings to add or remove")
    return parent, next(i for i, item in enumerate(_content(parent)) if item is node)


def _is_top(node: Any) -> bool:
    """A node of the document itself: the root element, or a comment or PI beside it."""
    return isinstance(node, etree._Element) and node.getparent() is None


def _discard(node: etree._Element) -> None:
    """Take a node out of its document (lxml has no removal for the document's own children: moving it does it)."""
    etree.Element("discarded").append(node)


def _add_beside_top(target: etree._Element, nodes: _Content, d: XmlDirective) -> None:
    """Comments and PIs before or after the root element (or another node beside it); never an element or text."""
    for node in nodes:
        if isinstance(node, str):
            if node.strip():
                raise fail(
                    NotApplicable,
                    "invalid-xml-prolog-operation",
                    "text cannot stand outside the root element",
                    d.where,
                    d.selector,
                )
        elif _is_element(node):
            raise fail(
                NotApplicable,
                "invalid-root-element-operation",
                "a document has one root element: no element can be added beside it",
                d.where,
                d.selector,
            )
    placed = [n for n in nodes if not isinstance(n, str)]
    for node in placed if d.pos == "before" else reversed(placed):
        (target.addprevious if d.pos == "before" else target.addnext)(node)


def _add(tree: etree._ElementTree, d: XmlDirective) -> None:
    target = _target(tree, d)
    if d.type is not None:
        _add_typed(tree, target, d)
        return
    nodes = _patch_content(d)
    if d.pos in ("before", "after") and _is_top(target):
        _add_beside_top(target, nodes, d)
        return
    if d.pos in ("before", "after"):
        parent, index = _position(target)
        items = _content(parent)
        at = index if d.pos == "before" else index + 1
        _set_content(parent, items[:at] + nodes + items[at:])
        return
    if not _is_element(target):
        raise fail(
            NotApplicable,
            "invalid-node-types",
            f"{d.selector!r} is not an element, so nothing can be added inside it",
            d.where,
            d.selector,
        )
    items = _content(target)
    _set_content(target, nodes + items if d.pos == "prepend" else items + nodes)


def _add_typed(tree: etree._ElementTree, target: Any, d: XmlDirective) -> None:
    if not _is_element(target):
        raise fail(NotApplicable, "invalid-node-types", f"{d.selector!r} is not an element", d.where, d.selector)
    match = TYPE_ATTRIBUTE.fullmatch(d.type or "")
    assert match is not None
    if match.group("attr"):
        name = _attribute_name(match.group("attr"), d)
        if name in target.attrib:
            raise fail(
                ElementExists,
                "invalid-attribute-value",
                f"the attribute {match.group('attr')!r} already exists; use replace",
                d.where,
                d.selector,
            )
        target.set(name, d.directive.text or "")
        return
    prefix, uri = match.group("ns"), (d.directive.text or "").strip()
    if prefix in target.nsmap:
        raise fail(
            ElementExists,
            "invalid-namespace-prefix",
            f"the prefix {prefix!r} is already declared here",
            d.where,
            d.selector,
        )
    if not uri:
        raise fail(MalformedPatch, "invalid-namespace-uri", "a namespace declaration needs a URI", d.where)
    redeclare(tree, target, {**target.nsmap, prefix: uri})


def _attribute_name(qualified: str, d: XmlDirective) -> str:
    if ":" not in qualified:
        return qualified
    prefix, local = qualified.split(":", 1)
    uri = namespaces_of(d.directive).get(prefix)
    if uri is None:
        raise fail(MalformedPatch, "invalid-namespace-prefix", f"the prefix {prefix!r} is not declared", d.where)
    return f"{{{uri}}}{local}"


def _text_only(d: XmlDirective, what: str) -> None:
    """An attribute, a text node or a namespace URI is replaced by text: any node in the content is an error."""
    if len(d.directive):
        raise fail(
            MalformedPatch,
            "invalid-node-types",
            f"replace of {what} takes text only, but its content holds a node",
            d.where,
            d.selector,
        )


def _replace(tree: etree._ElementTree, d: XmlDirective) -> None:
    target = _target(tree, d)
    if isinstance(target, tuple):  # namespace::prefix selects (prefix, uri)
        _text_only(d, "a namespace declaration")
        replace_namespace(tree, d, target)
        return
    if isinstance(target, etree._ElementUnicodeResult):
        _text_only(d, "an attribute" if target.is_attribute else "a text node")
        owner = target.getparent()
        if target.is_attribute:
            owner.set(target.attrname, d.directive.text or "")
        elif target.is_text:
            owner.text = d.directive.text or ""
        else:
            owner.tail = d.directive.text or ""
        return
    nodes = [n for n in _patch_content(d) if not (isinstance(n, str) and not n.strip())]
    if len(nodes) != 1 or isinstance(nodes[0], str) or type(nodes[0]) is not type(target):
        raise fail(
            MalformedPatch,
            "invalid-node-types",
            "replace needs exactly one node of the same kind as the one it replaces",
            d.where,
            d.selector,
        )
    parent = target.getparent()
    if parent is None and target is tree.getroot():
        tree._setroot(nodes[0])
    elif parent is None:  # a comment or PI beside the root element
        target.addnext(nodes[0])
        _discard(target)
    else:
        nodes[0].tail = target.tail
        parent.replace(target, nodes[0])


def _remove(tree: etree._ElementTree, d: XmlDirective) -> None:
    target = _target(tree, d)
    attribute = isinstance(target, etree._ElementUnicodeResult) and target.is_attribute
    if d.ws is not None and (attribute or isinstance(target, tuple)):  # RFC 5261 4.4: no text node beside these
        raise fail(
            MalformedPatch,
            "invalid-whitespace-directive",
            "ws applies to the removal of an element, comment or processing instruction, not of an attribute or a "
            "namespace declaration",
            d.where,
            d.selector,
        )
    if isinstance(target, tuple):
        remove_namespace(tree, d, target)
        return
    if attribute:
        del target.getparent().attrib[target.attrname]
        return
    if _is_element(target) and target.getparent() is None:
        raise fail(
            NotApplicable, "invalid-root-element-operation", "the root element cannot be removed", d.where, d.selector
        )
    if _is_top(target):  # a comment or PI beside the root: no text nodes live there, so `ws` has nothing to remove
        _discard(target)
        return
    parent, index = _position(target)
    items = _content(parent)
    start, stop = index, index + 1
    if d.ws in ("before", "both"):
        start -= _whitespace_sibling(items, start - 1, "before", d)
    if d.ws in ("after", "both"):
        stop += _whitespace_sibling(items, stop, "after", d)
    _set_content(parent, items[:start] + items[stop:])


def _whitespace_sibling(items: _Content, at: int, side: str, d: XmlDirective) -> int:
    """1 when the sibling on `side` is a whitespace-only text node (removed with the node); RFC 5261 4.4."""
    if 0 <= at < len(items) and isinstance(items[at], str) and not items[at].strip():
        return 1
    raise fail(
        NotApplicable,
        "invalid-whitespace-directive",
        f"ws={d.ws!r} asks to remove the whitespace text node "
        f"{side} {d.selector!r}, but the sibling there is not whitespace-only text",
        d.where,
        d.selector,
    )


_APPLY: Mapping[str, Callable[[etree._ElementTree, XmlDirective], None]] = {
    "add": _add,
    "replace": _replace,
    "remove": _remove,
}


def apply_parsed_xml_patch(root: etree._Element, directives: tuple[XmlDirective, ...]) -> etree._Element:
    """Apply checked directives to a copy of `root`'s document (with any comments and PIs beside the root);
    returns the new root element (`getroottree()` gives the whole document)."""
    tree = copy.deepcopy(root.getroottree())
    for directive in directives:
        _APPLY[directive.kind](tree, directive)
    return tree.getroot()


def apply_xml_patch(document: bytes, patch: bytes) -> bytes:
    """RFC 5261 on any XML document: the patched document as UTF-8 bytes, or a PatchError."""
    root = parse_xml(document, "document")
    directives = parse_xml_patch(parse_xml(patch, "XML patch"), root.getroottree().docinfo.encoding or "UTF-8")
    patched = apply_parsed_xml_patch(root, directives).getroottree()
    return bytes(etree.tostring(patched, encoding="UTF-8", xml_declaration=False))
