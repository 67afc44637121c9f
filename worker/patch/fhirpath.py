"""FHIRPath for patches: strict parsing (cached) and locating the elements a path selects.

The only module that imports fhirpathpy. fhirpathpy's own `parse` ignores
syntax errors, so parsing here attaches a listener that raises, and checks
that the whole text was consumed. Parsing costs far more than evaluating,
so each distinct path is parsed once (LRU cache).

A patch needs to know *where* a selected element lives, not only its value,
so member and index steps are walked here over the JSON with the R4
structure (giving each element's parent, key, index and FHIR type), and
fhirpathpy evaluates only the filtering functions (`where`, `first`,
`extension('url')`, `ofType`...), whose results are matched back to the
located candidates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.models import models
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from worker.patch.errors import MalformedPatch, NotApplicable, PatchError
from worker.patch.fhirpath_functions import FUNCTIONS
from worker.patch.structure import choice_key, is_resource_type, resolve_key, type_def

_R4 = models["r4"]
MAX_PATH_CHARS = 2000
MAX_PATH_CALLS = 32  # function calls in one path
MAX_PATH_NESTING = 12  # parentheses and brackets inside one another
# Words the FHIRPath grammar reserves but FHIR uses as element names (Narrative.div): after a dot and not
# called as a function, they are element names, so they are read as delimited identifiers (`div`).
_KEYWORD_MEMBER = re.compile(
    r"""'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|(?<=\.)(\s*)(div|mod|and|or|xor|implies|true|false)\b(?!\s*\()"""
)
_PATH_TOKENS = re.compile(r"""'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|[\w$]+\s*\(|[()\[\]]""")
_FILTERS = frozenset(
    {"where", "first", "last", "tail", "skip", "take", "single", "ofType", "extension", "modifierExtension"}
)
Node = dict[str, Any]


class _Raise(ErrorListener):  # type: ignore[misc]
    def syntaxError(self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any) -> None:  # noqa: N802
        raise SyntaxError(f"column {column + 1}: {msg}")


def _quote_keyword_members(expression: str) -> str:
    return _KEYWORD_MEMBER.sub(lambda m: m[0] if m[2] is None else f"{m[1]}`{m[2]}`", expression)


def _check_cost(expression: str) -> None:
    """Bound what parsing and evaluating a client's path can cost, before the parser sees it."""
    if len(expression) > MAX_PATH_CHARS:
        raise MalformedPatch(
            f"The path has {len(expression)} characters; at most {MAX_PATH_CHARS} are accepted", code="too-costly"
        )
    calls = depth = deepest = 0
    for token in _PATH_TOKENS.findall(expression):
        if token[-1] in "([":
            calls += token[-1] == "(" and len(token) > 1
            depth += 1
            deepest = max(deepest, depth)
        elif token in ")]":
            depth -= 1
    if calls > MAX_PATH_CALLS:
        raise MalformedPatch(
            f"The path calls {calls} functions; at most {MAX_PATH_CALLS} are accepted", code="too-costly"
        )
    if deepest > MAX_PATH_NESTING:
        raise MalformedPatch(
            f"The path nests {deepest} levels of brackets; at most {MAX_PATH_NESTING} are accepted", code="too-costly"
        )


@lru_cache(maxsize=4096)
def parse_path(expression: str) -> Node:
    """The AST of a FHIRPath expression; MalformedPatch (400) on any syntax error or beyond the cost bounds."""
    if not expression.strip():
        raise MalformedPatch("The path is empty", code="value")
    _check_cost(expression)
    lexer = FHIRPathLexer(InputStream(_quote_keyword_members(expression)))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    try:
        tree = parser.expression()
        if tokens.LT(1).type != Token.EOF:
            raise SyntaxError(f"column {tokens.LT(1).column + 1}: unexpected {tokens.LT(1).text!r}")
    except SyntaxError as exc:
        raise MalformedPatch(f"The path {expression!r} is not valid FHIRPath ({exc.msg})", code="value") from exc
    except Exception as exc:  # antlr raises its own exception classes on lexer failure
        raise MalformedPatch(f"The path {expression!r} is not valid FHIRPath ({exc})", code="value") from exc
    listener = ASTPathListener()  # type: ignore[no-untyped-call]
    ParseTreeWalker().walk(listener, tree)
    node = dict(listener.parentStack[0]["children"][0])
    _check_calls(node, expression)
    return node


def _check_calls(node: Node, expression: str) -> None:
    """Every function called exists and gets a number of arguments it takes (`where()` is refused here, not later)."""
    stack = [node]
    while stack:
        item = stack.pop()
        stack.extend(item.get("children", ()))
        if item.get("type") != "Functn":
            continue
        name = _identifier(item["children"][0])
        given = len(item["children"][1]["children"]) if len(item["children"]) > 1 else 0
        entry: dict[str, Any] | None = FUNCTIONS.get(name) or invocation_registry.get(name)  # type: ignore[assignment]
        if entry is None:
            raise MalformedPatch(
                f"The path {expression!r} calls {name}(), which is not a FHIRPath function supported here",
                code="not-supported",
            )
        takes = sorted(entry.get("arity", {0: []}))
        if given not in takes:
            counts = " or ".join(str(n) for n in takes)
            raise MalformedPatch(
                f"The path {expression!r} calls {name}() with {given} argument(s); it takes {counts}", code="value"
            )


@dataclass
class Slot:
    """Where one selected element lives: parent[key] or parent[key][index], of FHIR type `type`."""

    parent: dict[str, Any] | None
    key: str | None
    index: int | None
    type: str
    value: Any
    companion_of: Slot | None = None  # set when this slot is inside a primitive's "_key" object
    choice_of: str | None = None  # "value" when key is valueQuantity of value[x]

    def __repr__(self) -> str:
        return f"Slot({self.key}[{self.index}]: {self.type})"


def root_slot(resource: dict[str, Any]) -> Slot:
    return Slot(None, None, None, str(resource.get("resourceType")), resource)


def companion(slot: Slot, create: bool) -> dict[str, Any] | None:
    """The `_key` object (id, extension) of a primitive slot; created when asked."""
    if slot.parent is None or slot.key is None:
        return None
    name = "_" + slot.key
    if slot.index is None:
        found = slot.parent.get(name)
        if found is None and create:
            found = slot.parent[name] = {}
        return found if isinstance(found, dict) else None
    items = slot.parent.get(name)
    if items is None and create:
        items = slot.parent[name] = [None] * len(slot.parent.get(slot.key, []))
    if not isinstance(items, list) or slot.index >= len(items):
        return None
    if items[slot.index] is None and create:
        items[slot.index] = {}
    found = items[slot.index]
    return found if isinstance(found, dict) else None


def _element_type(value: Any, declared: str) -> str:
    if isinstance(value, dict) and declared == "Resource":
        return str(value.get("resourceType", declared))
    return declared


def children(slot: Slot, name: str) -> list[Slot]:
    """The elements called `name` under `slot` (FHIRPath member access, choices resolved)."""
    value = slot.value
    if not isinstance(value, dict):
        if name in ("extension", "id") and slot.key is not None:
            holder = companion(slot, create=False)
            if holder is None:
                return []
            return children(Slot(slot.parent, "_" + slot.key, slot.index, "Element", holder, companion_of=slot), name)
        return []
    tdef = type_def(_element_type(value, slot.type))
    elements = resolve_key(tdef, name, value) if tdef else []
    found: list[Slot] = []
    for element in elements:
        if element.key not in value and "_" + element.key not in value:
            continue
        item = value.get(element.key)
        if element.is_list and isinstance(item, list):
            found.extend(Slot(value, element.key, i, _element_type(v, element.type), v) for i, v in enumerate(item))
        elif element.is_list and item is None:  # only extensions on the items
            found.extend(
                Slot(value, element.key, i, element.type, None) for i, _ in enumerate(value["_" + element.key])
            )
        else:
            found.append(
                Slot(value, element.key, None, _element_type(item, element.type), item, choice_of=element.choice_of)
            )
    return found


class Locator:
    """Locates the slots a path selects in one resource."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.root = root_slot(resource)

    def locate(self, node: Node) -> list[Slot]:
        handler = _HANDLERS.get(node.get("type", ""))
        if handler is None:
            raise MalformedPatch(
                f"{node.get('text') or node.get('type')!r} cannot be used in a patch path: "
                "use element names, [index] and where(), first(), last(), extension(url), ofType()"
            )
        return handler(self, node)

    def term(self, node: Node) -> list[Slot]:
        inner = node["children"][0]
        if inner["type"] == "InvocationTerm":
            return self.invocation([self.root], inner["children"][0], at_root=True)
        if inner["type"] == "ParenthesizedTerm":
            return self.locate(inner["children"][0])
        return self.locate(inner)

    def invocation_expression(self, node: Node) -> list[Slot]:
        base, step = node["children"]
        if step["type"] == "FunctionInvocation":
            return self.filtered(node, self.locate(base), step)
        return self.invocation(self.locate(base), step, at_root=False)

    def invocation(self, inputs: list[Slot], step: Node, at_root: bool) -> list[Slot]:
        if step["type"] == "ThisInvocation":
            return inputs
        if step["type"] == "FunctionInvocation":
            return self.filtered(
                {
                    "type": "InvocationExpression",
                    "children": [
                        {
                            "type": "TermExpression",
                            "children": [{"type": "InvocationTerm", "children": [{"type": "ThisInvocation"}]}],
                        },
                        step,
                    ],
                },
                inputs,
                step,
            )
        if step["type"] != "MemberInvocation":
            raise MalformedPatch(f"{step.get('text')!r} cannot be used in a patch path")
        name = _identifier(step["children"][0])
        if at_root and (name == self.resource.get("resourceType") or (is_resource_type(name) and name != "Resource")):
            return inputs if name == self.resource.get("resourceType") else []
        return [child for slot in inputs for child in children(slot, name)]

    def indexer(self, node: Node) -> list[Slot]:
        base, index_node = node["children"]
        text = index_node.get("text", "")
        if not text.isdigit():
            raise MalformedPatch("An index in a patch path must be a whole number literal such as [0]", code="value")
        candidates = self.locate(base)
        position = int(text)
        return [candidates[position]] if position < len(candidates) else []

    def filtered(self, node: Node, candidates: list[Slot], step: Node) -> list[Slot]:
        function = _identifier(step["children"][0]["children"][0])
        if function not in _FILTERS:
            raise MalformedPatch(
                f"The function {function}() cannot select elements to patch; use where(), first(), last(), tail(), "
                f"skip(), take(), single(), ofType(), extension() or modifierExtension()"
            )
        if function in ("extension", "modifierExtension"):
            candidates = [child for slot in candidates for child in children(slot, function)]
        results = _evaluate(self.resource, node)
        return _match(candidates, results)


def _identifier(node: Node) -> str:
    text = str(node.get("text", ""))
    return text[1:-1] if text.startswith("`") else text


def _evaluate(resource: dict[str, Any], node: Node) -> list[Any]:
    options = {"returnRawData": True, "userInvocationTable": FUNCTIONS}
    try:
        return list(apply_parsed_path(resource, {"children": [node]}, {}, _R4, options))  # type: ignore[no-untyped-call]
    except PatchError:
        raise
    except Exception as exc:  # fhirpathpy raises plain exceptions for evaluation errors
        raise NotApplicable(f"The path {node.get('text')!r} cannot be evaluated: {exc}") from exc


def _same(slot: Slot, result: Any) -> bool:
    data = getattr(result, "data", result)
    if isinstance(data, dict | list):
        return slot.value is data or (
            slot.value is None and slot.companion_of is None and data is companion(slot, create=False)
        )
    return type(slot.value) is type(data) and slot.value == data


def _match(candidates: list[Slot], results: list[Any]) -> list[Slot]:
    """The candidates that the filter kept, in order (results are a subsequence of candidates)."""
    matched: list[Slot] = []
    position = 0
    for result in results:
        while position < len(candidates) and not _same(candidates[position], result):
            position += 1
        if position == len(candidates):
            break
        matched.append(candidates[position])
        position += 1
    return matched


_HANDLERS: dict[str, Callable[[Locator, Node], list[Slot]]] = {
    "TermExpression": Locator.term,
    "InvocationExpression": Locator.invocation_expression,
    "IndexerExpression": Locator.indexer,
}


def locate(resource: dict[str, Any], expression: str) -> list[Slot]:
    """The slots `expression` selects in `resource` (parse cached; MalformedPatch on bad syntax)."""
    return Locator(resource).locate(parse_path(expression))


def split_member(expression: str) -> tuple[Node, str] | None:
    """`A.B.name` -> (AST of A.B, "name"); None when the path does not end in a member name."""
    node = parse_path(expression)
    if node.get("type") == "InvocationExpression" and node["children"][1]["type"] == "MemberInvocation":
        return node["children"][0], _identifier(node["children"][1]["children"][0])
    return None


def element_key(slot_value: dict[str, Any], slot_type: str, name: str, value_type: str | None) -> str | None:
    """The JSON key for element `name` of a container: choice elements take the value's type."""
    tdef = type_def(_element_type(slot_value, slot_type))
    if tdef is None:
        return None
    if name in tdef.elements:
        return name
    if name in tdef.choices and value_type:
        key = choice_key(name, value_type)
        return key if key in tdef.elements else None
    return None
