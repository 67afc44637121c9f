"""FHIR JSON in and out, with decimals exactly as written.

Numbers with a fraction or exponent are read as `decimal.Decimal`, so `1.50`
stays `1.50` through every patch, store and answer (FHIR decimals carry their
precision). simplejson writes Decimal back as the same digits.

Every JSON body a client sends enters here, so the limits that keep one
request cheap are checked here, before any value is converted or used:
numbers within what FHIR allows, no duplicate keys, nesting at most
`MAX_NESTING` levels, and strings that are Unicode text (no lone surrogates).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import simplejson

from worker.patch.errors import MalformedPatch

MAX_NUMBER_CHARS = 64  # a FHIR decimal keeps 18 significant digits at least; 64 characters leaves room to spare
MAX_EXPONENT = 308  # the range of an IEEE double, which every JSON reader can hold
MAX_NESTING = 200  # arrays and objects; FHIR elements nest about half as deep (an extension is an object in a list)
_SURROGATE = re.compile("[\ud800-\udfff]")
_MIGHT_HOLD_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class _Refused(ValueError):
    """A JSON value the service does not accept (caught in `loads`), with its OperationOutcome issue code."""

    def __init__(self, message: str, code: str = "value") -> None:
        super().__init__(message)
        self.code = code


def _reject_constant(name: str) -> Any:
    raise _Refused(f"{name} is not valid JSON", "structure")


def _number_text(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"the number {text[:20]}... has {len(text)} characters; at most {MAX_NUMBER_CHARS} are accepted")
    return text


def _decimal(text: str) -> Decimal:
    value = Decimal(_number_text(text))
    if value and abs(value.adjusted()) > MAX_EXPONENT:
        raise _Refused(f"the number {text} is out of range (exponent beyond \u00b1{MAX_EXPONENT})")
    return value


def _integer(text: str) -> int:
    return int(_number_text(text))


_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def number_from_text(text: str, *, integer: bool) -> int | Decimal:
    """A FHIR integer or decimal written as text (XML's `value` attribute): ASCII digits in FHIR's form,
    within the same bounds as JSON numbers; ValueError otherwise."""
    if not (_INTEGER_TEXT if integer else _DECIMAL_TEXT).fullmatch(text):
        raise ValueError(f"{text!r} is not written as a FHIR {'integer' if integer else 'decimal'}")
    return _integer(text) if integer else _decimal(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _Refused(f"the key {twice!r} appears twice in one object", "structure")
    return result


def nesting_problem(value: Any) -> str | None:
    """Why a JSON value built in memory (a patched resource) nests too deeply, or None."""
    try:
        _check_shape(value, surrogates=False)
    except _Refused as exc:
        return str(exc)
    return None


def _check_shape(value: Any, surrogates: bool) -> None:
    """Nesting depth (iteratively, so depth itself cannot exhaust the stack) and, when asked, lone surrogates."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_NESTING:
                raise _Refused(f"it is nested deeper than {MAX_NESTING} levels", "too-costly")
            if surrogates and any(_SURROGATE.search(key) for key in item):
                raise _Refused("a key holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > MAX_NESTING:
                raise _Refused(f"it is nested deeper than {MAX_NESTING} levels", "too-costly")
            stack.extend((v, depth + 1) for v in item)
        elif surrogates and isinstance(item, str) and _SURROGATE.search(item):
            raise _Refused("a string holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text")


def loads(data: bytes | str, *, what: str = "document") -> Any:
    """Parse JSON (UTF-8 bytes or text); MalformedPatch names line and column on failure."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    except UnicodeDecodeError as exc:
        raise MalformedPatch(
            f"The {what} is not UTF-8 text: byte {exc.start} cannot be decoded", code="structure"
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = simplejson.loads(
            text, parse_float=_decimal, parse_int=_integer, parse_constant=_reject_constant, object_pairs_hook=_object
        )
        _check_shape(value, surrogates=_MIGHT_HOLD_SURROGATE.search(text) is not None)
    except simplejson.JSONDecodeError as exc:
        raise MalformedPatch(
            f"The {what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            f"line {exc.lineno}, column {exc.colno}",
            code="structure",
        ) from exc
    except _Refused as exc:
        raise MalformedPatch(f"The {what} is not accepted: {exc}", code=exc.code) from exc
    except (ValueError, RecursionError) as exc:
        raise MalformedPatch(f"The {what} is not valid JSON: {exc}", code="structure") from exc
    return value


def loads_checked_before(text: str | bytes) -> Any:
    """JSON the service wrote itself, or that `loads` already accepted (stored versions, accepted bodies): the
    same Decimal reading, without the checks that bound what a client may send (they cost a walk per parse)."""
    return simplejson.loads(text, use_decimal=True)


def dumps(value: Any, *, indent: int | None = None) -> str:
    """FHIR JSON text; Decimal values keep their digits."""
    return str(
        simplejson.dumps(
            value, use_decimal=True, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":")
        )
    )


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def same_json(a: Any, b: Any) -> bool:
    """Equal as FHIR JSON: same kinds and values, decimals with the same digits (1.50 is not 1.5); key order aside."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return type(a) is type(b) and str(a) == str(b)
    return type(a) is type(b) and a == b


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars): several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value
