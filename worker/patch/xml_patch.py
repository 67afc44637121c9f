"""XML Patch (RFC 5261) on any XML document, on lxml.

The patch's root may be any element (RFC 5261's `<diff>`, FHIR's `<Patch>`);
its element children are `add`, `replace` and `remove` directives. Selectors
are absolute XPath location paths; prefixes resolve against the directive's
in-scope namespaces, unprefixed names against the patch's default namespace
(as the RFC says, unlike plain XPath 1.0), and `f` means the FHIR namespace
when the patch does not declare it. Every directive is checked before the
document is touched. Failures carry the RFC's error condition name.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from worker.patch.errors import ElementExists, MalformedPatch, MultipleMatches, NotApplicable, PatchError, TargetNotFound
from worker.patch.fhir_xml import FHIR_NS, parse_xml

_DEFAULT_PREFIX = "_default"
_TYPE = re.compile(r"@(?P<attr>[A-Za-z_][\w.-]*(:[A-Za-z_][\w.-]*)?)|namespace::(?P<ns>[A-Za-z_][\w.-]*)")
# Unprefixed name tests: not after @ : $ or an axis, not a function name, not an operator word.
_NAME = re.compile(r"(?<![@:$\w.-])(?P<name>[A-Za-z_][\w.-]*)(?![\w.-]*\s*(\(|::|:(?!:)))")
_OPERATORS = frozenset({"and", "or", "div", "mod"})
_NODE_TESTS = frozenset({"text", "comment", "node", "processing-instruction"})
_Content = list[Any]  # strings (text nodes) and lxml nodes, in document order


@dataclass(frozen=True)
class XmlDirective:
    index: int
    kind: str
    selector: str
    compiled: etree.XPath
    directive: etree._Element
    pos: str | None
    type: str | None
    ws: str | None

    @property
    def where(self) -> str:
        return f"/{etree.QName(self.directive.getparent()).localname}/*[{self.index + 1}]"


def _fail(kind: type[PatchError], condition: str, message: str, *where: str) -> PatchError:
    return kind(f"<{condition}>: {message}", *where)


def _namespaces(directive: etree._Element) -> dict[str, str]:
    namespaces = {prefix: uri for prefix, uri in directive.nsmap.items() if prefix}
    namespaces.setdefault("f", FHIR_NS)
    if directive.nsmap.get(None):
        namespaces[_DEFAULT_PREFIX] = directive.nsmap[None]
    return namespaces


def _rewrite_default(selector: str, has_default: bool) -> str:
    if not has_default:
        return selector
    parts = re.split(r"('[^']*'|\"[^\"]*\")", selector)  # never touch string literals
    for i in range(0, len(parts), 2):
        parts[i] = _NAME.sub(lambda m: m.group(0) if m.group("name") in _OPERATORS | _NODE_TESTS else f"{_DEFAULT_PREFIX}:{m.group(0)}", parts[i])
    return "".join(parts)


def _directive(index: int, element: etree._Element) -> XmlDirective:
    where = f"/{etree.QName(element.getparent()).localname}/*[{index + 1}]"
    kind = etree.QName(element).localname
    if kind not in _APPLY:
        raise _fail(MalformedPatch, "invalid-patch-directive", f"unknown directive <{kind}>; use add, replace or remove", where)
    selector = element.get("sel")
    if not selector:
        raise _fail(MalformedPatch, "invalid-diff-format", f"<{kind}> needs a sel attribute", where)
    namespaces = _namespaces(element)
    # RFC 5261 evaluates selectors from the document node: "doc" means "/doc".
    anchored = selector if selector.startswith(("/", "id(")) else "/" + selector
    try:
        compiled = etree.XPath(_rewrite_default(anchored, _DEFAULT_PREFIX in namespaces), namespaces=namespaces)
    except etree.XPathSyntaxError as exc:
        raise _fail(MalformedPatch, "invalid-xpath", f"the selector {selector!r} is not valid: {exc}", where, selector) from exc
    for prefix in re.findall(r"(?<![\w:@$.-])([A-Za-z_][\w.-]*):(?!:)", re.sub(r"'[^']*'|\"[^\"]*\"", "", selector)):
        if prefix not in namespaces:
            raise _fail(MalformedPatch, "invalid-namespace-prefix", f"the prefix {prefix!r} in {selector!r} is not declared", where, selector)
    pos, type_, ws = element.get("pos"), element.get("type"), element.get("ws")
    if kind == "add" and pos not in (None, "before", "after", "prepend"):
        raise _fail(MalformedPatch, "invalid-attribute-value", f"pos must be before, after or prepend, not {pos!r}", where)
    if kind == "add" and type_ is not None and not _TYPE.fullmatch(type_):
        raise _fail(MalformedPatch, "invalid-attribute-value", f"type must be @name or namespace::prefix, not {type_!r}", where)
    if kind == "remove" and ws not in (None, "before", "after", "both"):
        raise _fail(MalformedPatch, "invalid-whitespace-directive", f"ws must be before, after or both, not {ws!r}", where)
    return XmlDirective(index, kind, selector, compiled, element, pos, type_, ws)


def parse_xml_patch(patch_root: etree._Element) -> tuple[XmlDirective, ...]:
    """Check every directive of a patch document; MalformedPatch (400) names the first bad one."""
    if patch_root.text and patch_root.text.strip():
        raise _fail(MalformedPatch, "invalid-diff-format", "text is not allowed between directives", "/")
    directives: list[XmlDirective] = []
    for child in patch_root:
        if child.tail and child.tail.strip():
            raise _fail(MalformedPatch, "invalid-diff-format", "text is not allowed between directives", "/")
        if isinstance(child.tag, str):
            directives.append(_directive(len(directives), child))
    return tuple(directives)


def _target(tree: etree._ElementTree, d: XmlDirective) -> Any:
    try:
        found = d.compiled(tree)
    except etree.XPathEvalError as exc:
        raise _fail(MalformedPatch, "invalid-xpath", f"the selector {d.selector!r} cannot be evaluated: {exc}", d.where, d.selector) from exc
    if not isinstance(found, list):
        raise _fail(NotApplicable, "invalid-node-types", f"the selector {d.selector!r} selects a value, not a node", d.where, d.selector)
    if not found:
        raise _fail(TargetNotFound, "unlocated-node", f"the selector {d.selector!r} matches no node", d.where, d.selector)
    if len(found) > 1:
        raise _fail(MultipleMatches, "no-unique-node", f"the selector {d.selector!r} matches {len(found)} nodes; it must match exactly one", d.where, d.selector)
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
        raise _fail(NotApplicable, "invalid-root-element-operation", "the root element has no siblings to add or remove")
    return parent, next(i for i, item in enumerate(_content(parent)) if item is node)


def _add(tree: etree._ElementTree, d: XmlDirective) -> None:
    target = _target(tree, d)
    if d.type is not None:
        _add_typed(tree, target, d)
        return
    nodes = _patch_content(d)
    if d.pos in ("before", "after"):
        parent, index = _position(target)
        items = _content(parent)
        at = index if d.pos == "before" else index + 1
        _set_content(parent, items[:at] + nodes + items[at:])
        return
    if not _is_element(target):
        raise _fail(NotApplicable, "invalid-node-types", f"{d.selector!r} is not an element, so nothing can be added inside it", d.where, d.selector)
    items = _content(target)
    _set_content(target, nodes + items if d.pos == "prepend" else items + nodes)


def _add_typed(tree: etree._ElementTree, target: Any, d: XmlDirective) -> None:
    if not _is_element(target):
        raise _fail(NotApplicable, "invalid-node-types", f"{d.selector!r} is not an element", d.where, d.selector)
    match = _TYPE.fullmatch(d.type or "")
    assert match is not None
    if match.group("attr"):
        name = _attribute_name(match.group("attr"), d)
        if name in target.attrib:
            raise _fail(ElementExists, "invalid-attribute-value", f"the attribute {match.group('attr')!r} already exists; use replace", d.where, d.selector)
        target.set(name, d.directive.text or "")
        return
    prefix, uri = match.group("ns"), (d.directive.text or "").strip()
    if prefix in target.nsmap:
        raise _fail(ElementExists, "invalid-namespace-prefix", f"the prefix {prefix!r} is already declared here", d.where, d.selector)
    if not uri:
        raise _fail(MalformedPatch, "invalid-namespace-uri", "a namespace declaration needs a URI", d.where)
    _redeclare(tree, target, {**target.nsmap, prefix: uri})


def _attribute_name(qualified: str, d: XmlDirective) -> str:
    if ":" not in qualified:
        return qualified
    prefix, local = qualified.split(":", 1)
    uri = _namespaces(d.directive).get(prefix)
    if uri is None:
        raise _fail(MalformedPatch, "invalid-namespace-prefix", f"the prefix {prefix!r} is not declared", d.where)
    return f"{{{uri}}}{local}"


def _redeclare(tree: etree._ElementTree, element: etree._Element, nsmap: Mapping[str | None, str]) -> etree._Element:
    """lxml cannot change nsmap in place: rebuild the element with the new declarations."""
    rebuilt = etree.Element(element.tag, dict(element.attrib), nsmap=dict(nsmap))
    rebuilt.text, rebuilt.tail = element.text, element.tail
    rebuilt.extend(list(element))
    parent = element.getparent()
    if parent is None:
        tree._setroot(rebuilt)
    else:
        parent.replace(element, rebuilt)
    return rebuilt


def _replace(tree: etree._ElementTree, d: XmlDirective) -> None:
    target = _target(tree, d)
    if isinstance(target, tuple):  # namespace::prefix selects (prefix, uri)
        owner = _namespace_owner(tree, d)
        new_uri = (d.directive.text or "").strip()
        _retag(owner, target[0], target[1], new_uri)
        _redeclare(tree, owner, {**owner.nsmap, target[0]: new_uri})
        return
    if isinstance(target, etree._ElementUnicodeResult):
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
        raise _fail(MalformedPatch, "invalid-node-types", "replace needs exactly one node of the same kind as the one it replaces", d.where, d.selector)
    parent = target.getparent()
    if parent is None:
        tree._setroot(nodes[0])
    else:
        nodes[0].tail = target.tail
        parent.replace(target, nodes[0])


def _retag(owner: etree._Element, prefix: str, old: str, new: str) -> None:
    """Names written with `prefix` follow its declaration to the new namespace URI."""
    for element in owner.iter():
        if not isinstance(element.tag, str):
            continue
        if element.prefix == prefix and etree.QName(element).namespace == old:
            element.tag = f"{{{new}}}{etree.QName(element).localname}"
        for name in [n for n in element.attrib if etree.QName(n).namespace == old]:
            element.set(f"{{{new}}}{etree.QName(name).localname}", element.attrib.pop(name))


def _namespace_owner(tree: etree._ElementTree, d: XmlDirective) -> etree._Element:
    owner_selector = d.selector.rsplit("/namespace::", 1)[0]
    owner_selector = owner_selector if owner_selector.startswith("/") else "/" + owner_selector
    found = etree.XPath(_rewrite_default(owner_selector, _DEFAULT_PREFIX in _namespaces(d.directive)), namespaces=_namespaces(d.directive))(tree)
    if not isinstance(found, list) or len(found) != 1:
        raise _fail(TargetNotFound, "unlocated-node", f"the element of {d.selector!r} cannot be located", d.where, d.selector)
    return found[0]


def _remove(tree: etree._ElementTree, d: XmlDirective) -> None:
    target = _target(tree, d)
    if isinstance(target, tuple):
        owner = _namespace_owner(tree, d)
        uri = owner.nsmap.get(target[0])
        if any(etree.QName(e).namespace == uri for e in owner.iter() if isinstance(e.tag, str)):
            raise _fail(NotApplicable, "invalid-namespace-uri", f"the namespace {target[0]!r} is still in use", d.where, d.selector)
        _redeclare(tree, owner, {p: u for p, u in owner.nsmap.items() if p != target[0]})
        return
    if isinstance(target, etree._ElementUnicodeResult) and target.is_attribute:
        del target.getparent().attrib[target.attrname]
        return
    if _is_element(target) and target.getparent() is None:
        raise _fail(NotApplicable, "invalid-root-element-operation", "the root element cannot be removed", d.where, d.selector)
    parent, index = _position(target)
    items = _content(parent)
    start, stop = index, index + 1
    if d.ws in ("before", "both") and start > 0 and isinstance(items[start - 1], str) and not items[start - 1].strip():
        start -= 1
    if d.ws in ("after", "both") and stop < len(items) and isinstance(items[stop], str) and not items[stop].strip():
        stop += 1
    _set_content(parent, items[:start] + items[stop:])


_APPLY: Mapping[str, Callable[[etree._ElementTree, XmlDirective], None]] = {"add": _add, "replace": _replace, "remove": _remove}


def apply_parsed_xml_patch(root: etree._Element, directives: tuple[XmlDirective, ...]) -> etree._Element:
    """Apply checked directives to a copy of `root`; returns the new root element."""
    tree = etree.ElementTree(copy.deepcopy(root))
    for directive in directives:
        _APPLY[directive.kind](tree, directive)
    return tree.getroot()


def apply_xml_patch(document: bytes, patch: bytes) -> bytes:
    """RFC 5261 on any XML document: the patched document as UTF-8 bytes, or a PatchError."""
    directives = parse_xml_patch(parse_xml(patch, "XML patch"))
    root = parse_xml(document, "document")
    return bytes(etree.tostring(apply_parsed_xml_patch(root, directives), encoding="UTF-8"))
