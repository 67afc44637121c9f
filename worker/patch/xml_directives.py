"""XML Patch (RFC 5261) directives: read and checked before any document is touched.

Selectors are absolute XPath location paths; prefixes resolve against the
directive's in-scope namespaces, unprefixed names against the patch's default
namespace (as the RFC says, unlike plain XPath 1.0), and `f` means the FHIR
namespace when the patch does not declare it. A failure names the RFC's error
condition (section 5.1) and the directive (`/diff/*[2]`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from worker.patch.errors import MalformedPatch, PatchError
from worker.patch.fhir_xml import FHIR_NS

DIRECTIVES = frozenset({"add", "replace", "remove"})
DEFAULT_PREFIX = "_default"
TYPE_ATTRIBUTE = re.compile(r"@(?P<attr>[A-Za-z_][\w.-]*(:[A-Za-z_][\w.-]*)?)|namespace::(?P<ns>[A-Za-z_][\w.-]*)")
# Unprefixed name tests: not after @ : $ or an axis, not a function name, not an operator word.
_NAME = re.compile(r"(?<![@:$\w.-])(?P<name>[A-Za-z_][\w.-]*)(?![\w.-]*\s*(\(|::|:(?!:)))")
_OPERATORS = frozenset({"and", "or", "div", "mod"})
_NODE_TESTS = frozenset({"text", "comment", "node", "processing-instruction"})


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


def fail(kind: type[PatchError], condition: str, message: str, *where: str) -> PatchError:
    return kind(f"<{condition}>: {message}", *where)


def namespaces_of(directive: etree._Element) -> dict[str, str]:
    namespaces = {prefix: uri for prefix, uri in directive.nsmap.items() if prefix}
    namespaces.setdefault("f", FHIR_NS)
    if directive.nsmap.get(None):
        namespaces[DEFAULT_PREFIX] = directive.nsmap[None]
    return namespaces


def with_default_prefix(selector: str, has_default: bool) -> str:
    if not has_default:
        return selector
    parts = re.split(r"('[^']*'|\"[^\"]*\")", selector)  # never touch string literals
    for i in range(0, len(parts), 2):
        parts[i] = _NAME.sub(
            lambda m: m.group(0) if m.group("name") in _OPERATORS | _NODE_TESTS else f"{DEFAULT_PREFIX}:{m.group(0)}",
            parts[i],
        )
    return "".join(parts)


def _directive(index: int, element: etree._Element) -> XmlDirective:
    where = f"/{etree.QName(element.getparent()).localname}/*[{index + 1}]"
    kind = etree.QName(element).localname
    if kind not in DIRECTIVES:
        raise fail(
            MalformedPatch, "invalid-patch-directive", f"unknown directive <{kind}>; use add, replace or remove", where
        )
    selector = element.get("sel")
    if not selector:
        raise fail(MalformedPatch, "invalid-diff-format", f"<{kind}> needs a sel attribute", where)
    compiled = _compiled(selector, namespaces_of(element), where)
    pos, type_, ws = element.get("pos"), element.get("type"), element.get("ws")
    if kind == "add" and pos not in (None, "before", "after", "prepend"):
        raise fail(
            MalformedPatch, "invalid-attribute-value", f"pos must be before, after or prepend, not {pos!r}", where
        )
    if kind == "add" and type_ is not None and not TYPE_ATTRIBUTE.fullmatch(type_):
        raise fail(
            MalformedPatch, "invalid-attribute-value", f"type must be @name or namespace::prefix, not {type_!r}", where
        )
    if kind == "remove" and ws not in (None, "before", "after", "both"):
        raise fail(
            MalformedPatch, "invalid-whitespace-directive", f"ws must be before, after or both, not {ws!r}", where
        )
    return XmlDirective(index, kind, selector, compiled, element, pos, type_, ws)


def _compiled(selector: str, namespaces: dict[str, str], where: str) -> etree.XPath:
    # RFC 5261 evaluates selectors from the document node: "doc" means "/doc".
    anchored = selector if selector.startswith(("/", "id(")) else "/" + selector
    if anchored.strip() == "/":
        raise fail(
            MalformedPatch,
            "invalid-xml-prolog-operation",
            "the document node and its prolog cannot be patched; select the root element or a node beside it",
            where,
            selector,
        )
    try:
        compiled = etree.XPath(with_default_prefix(anchored, DEFAULT_PREFIX in namespaces), namespaces=namespaces)
    except etree.XPathSyntaxError as exc:
        raise fail(
            MalformedPatch, "invalid-xpath", f"the selector {selector!r} is not valid: {exc}", where, selector
        ) from exc
    for prefix in re.findall(r"(?<![\w:@$.-])([A-Za-z_][\w.-]*):(?!:)", re.sub(r"'[^']*'|\"[^\"]*\"", "", selector)):
        if prefix not in namespaces:
            raise fail(
                MalformedPatch,
                "invalid-namespace-prefix",
                f"the prefix {prefix!r} in {selector!r} is not declared",
                where,
                selector,
            )
    return compiled


def parse_xml_patch(patch_root: etree._Element, document_encoding: str = "UTF-8") -> tuple[XmlDirective, ...]:
    """Check every directive of a patch document; MalformedPatch (400) names the first bad one."""
    encoding = patch_root.getroottree().docinfo.encoding or "UTF-8"
    if encoding.upper().replace("_", "-") != document_encoding.upper().replace("_", "-"):
        raise fail(
            MalformedPatch,
            "invalid-character-set",
            f"the patch is {encoding} but the document is {document_encoding}",
            "/",
        )
    if patch_root.text and patch_root.text.strip():
        raise fail(MalformedPatch, "invalid-diff-format", "text is not allowed between directives", "/")
    directives: list[XmlDirective] = []
    for child in patch_root:
        if child.tail and child.tail.strip():
            raise fail(MalformedPatch, "invalid-diff-format", "text is not allowed between directives", "/")
        if isinstance(child.tag, str):
            directives.append(_directive(len(directives), child))
    if not directives:
        raise fail(MalformedPatch, "invalid-diff-format", "the patch holds no add, replace or remove directive", "/")
    return tuple(directives)
