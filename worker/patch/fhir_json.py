"""FHIR JSON in and out, with decimals exactly as written.

Numbers with a fraction or exponent are read as `decimal.Decimal`, so `1.50`
stays `1.50` through every patch, store and answer (FHIR decimals carry their
precision). simplejson writes Decimal back as the same digits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson

from worker.patch.errors import MalformedPatch


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | str, *, what: str = "document") -> Any:
    """Parse JSON (UTF-8 bytes or text); MalformedPatch names line and column on failure."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    except UnicodeDecodeError as exc:
        raise MalformedPatch(f"The {what} is not UTF-8 text: byte {exc.start} cannot be decoded", code="structure") from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return simplejson.loads(text, use_decimal=True, parse_constant=_reject_constant)
    except simplejson.JSONDecodeError as exc:
        raise MalformedPatch(f"The {what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                             f"line {exc.lineno}, column {exc.colno}", code="structure") from exc
    except (ValueError, RecursionError) as exc:
        raise MalformedPatch(f"The {what} is not valid JSON: {exc}", code="structure") from exc


def dumps(value: Any, *, indent: int | None = None) -> str:
    """FHIR JSON text; Decimal values keep their digits."""
    return str(simplejson.dumps(value, use_decimal=True, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":")))


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars): several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value
