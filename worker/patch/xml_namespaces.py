"""XML Patch (RFC 5261) on namespace declarations: `namespace::prefix` selectors, replaced or removed.

lxml cannot change an element's declarations in place, so the element is rebuilt with the new ones, and the
names written with a prefix follow its declaration to a new URI.
"""

from __future__ import annotations

from collections.abc import Mapping

from lxml import etree

from worker.patch.errors import NotApplicable, TargetNotFound
from worker.patch.xml_directives import DEFAULT_PREFIX, XmlDirective, fail, namespaces_of, with_default_prefix


def replace_namespace(tree: etree._ElementTree, d: XmlDirective, target: tuple[str, str]) -> None:
    """The declaration of prefix `target[0]` (now URI `target[1]`) gets the directive's text as its URI."""
    owner = namespace_owner(tree, d)
    new_uri = (d.directive.text or "").strip()
    retag(owner, target[0], target[1], new_uri)
    redeclare(tree, owner, {**owner.nsmap, target[0]: new_uri})


def remove_namespace(tree: etree._ElementTree, d: XmlDirective, target: tuple[str, str]) -> None:
    """The declaration of prefix `target[0]` goes; an error while any element of its scope still uses it."""
    owner = namespace_owner(tree, d)
    uri = owner.nsmap.get(target[0])
    if any(etree.QName(e).namespace == uri for e in owner.iter() if isinstance(e.tag, str)):
        raise fail(
            NotApplicable, "invalid-namespace-uri", f"the namespace {target[0]!r} is still in use", d.where, d.selector
        )
    redeclare(tree, owner, {p: u for p, u in owner.nsmap.items() if p != target[0]})


def redeclare(tree: etree._ElementTree, element: etree._Element, nsmap: Mapping[str | None, str]) -> etree._Element:
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


def retag(owner: etree._Element, prefix: str, old: str, new: str) -> None:
    """Names written with `prefix` follow its declaration to the new namespace URI."""
    for element in owner.iter():
        if not isinstance(element.tag, str):
            continue
        if element.prefix == prefix and etree.QName(element).namespace == old:
            element.tag = f"{{{new}}}{etree.QName(element).localname}"
        for name in [n for n in element.attrib if etree.QName(n).namespace == old]:
            element.set(f"{{{new}}}{etree.QName(name).localname}", element.attrib.pop(name))


def namespace_owner(tree: etree._ElementTree, d: XmlDirective) -> etree._Element:
    owner_selector = d.selector.rsplit("/namespace::", 1)[0]
    owner_selector = owner_selector if owner_selector.startswith("/") else "/" + owner_selector
    found = etree.XPath(
        with_default_prefix(owner_selector, DEFAULT_PREFIX in namespaces_of(d.directive)),
        namespaces=namespaces_of(d.directive),
    )(tree)
    if not isinstance(found, list) or len(found) != 1:
        raise fail(
            TargetNotFound, "unlocated-node", f"the element of {d.selector!r} cannot be located", d.where, d.selector
        )
    return found[0]
