"""The FHIRPath functions this server adds to fhirpathpy's: regular expressions on RE2, modifierExtension(url).

`matches` and `replaceMatches` run on RE2 (linear time: a client's pattern
cannot backtrack without bound); fhirpathpy's own use Python's `re`.
fhirpathpy has `extension(url)` but not its modifier twin.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import re2

from worker.patch.errors import MalformedPatch


def _string_of(inputs: list[Any]) -> str | None:
    if len(inputs) != 1 or not isinstance(inputs[0], str):
        return None
    return inputs[0]


def _matches(inputs: list[Any], pattern: Any) -> Any:
    text = _string_of(inputs)
    if text is None or not isinstance(pattern, str) or not pattern:
        return []
    return _regex(pattern).search(text) is not None


def _replace_matches(inputs: list[Any], pattern: Any, substitution: Any) -> Any:
    text = _string_of(inputs)
    if text is None or not isinstance(pattern, str) or not isinstance(substitution, str):
        return []
    return _regex(pattern).sub(re.sub(r"\$(\d+)", r"\\\1", substitution), text)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    try:
        return re2.compile("(?s)" + pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise MalformedPatch(
            f"The regular expression {pattern!r} is not accepted ({reason}); patterns are RE2 "
            "syntax, without backreferences or lookaround",
            code="value",
        ) from exc


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def _modifier_extension(inputs: list[Any], url: Any) -> list[Any]:
    """FHIR's modifierExtension(url), the modifier twin of extension(url) (fhirpathpy has only the latter)."""
    return [
        item
        for holder in inputs
        if isinstance(holder, dict)
        for item in holder.get("modifierExtension") or []
        if isinstance(item, dict) and item.get("url") == url
    ]


FUNCTIONS: dict[
    str, dict[str, Any]
] = {  # fhirpathpy's own table, with the regex functions on RE2 instead of Python's backtracking `re`
    "matches": {"fn": _matches, "arity": {1: ["String"]}, "nullable_input": True},
    "replaceMatches": {"fn": _replace_matches, "arity": {2: ["String", "String"]}, "nullable_input": True},
    "modifierExtension": {"fn": _modifier_extension, "arity": {1: ["String"]}},
}
