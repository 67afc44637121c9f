"""The settings of who may ask: bearer and DPoP tokens, the deployment's scope names, the headers every request
must carry. `Settings` (worker/settings.py) inherits these fields; each names its reader in its metadata."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.environment import SettingsError, choice, flag, json_object, number, patterns

DPOP_MODES = ("allowed", "off", "required")  # the first is the default
# RFC 9449 §4.3: an asymmetric algorithm. RS512 is HelseID's; none, HS* and anything unknown are never accepted.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")  # an RFC 9110 token


def _algorithms(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    chosen = patterns(env, name) or default
    unknown = [a for a in chosen if a not in ASYMMETRIC_ALGORITHMS]
    if unknown:
        raise SettingsError(f"{name}: {', '.join(unknown)} not among {', '.join(ASYMMETRIC_ALGORITHMS)}")
    return chosen


def _header_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    names = patterns(env, name)
    bad = [n for n in names if not _HEADER_NAME.fullmatch(n)]
    if bad:
        raise SettingsError(f"{name}: {', '.join(map(repr, bad))} is not an HTTP header name")
    return tuple(n.lower() for n in names)


def _header_name(env: Mapping[str, str], name: str) -> str:
    names = _header_names(env, name)
    if len(names) > 1:
        raise SettingsError(f"{name} names one header")
    return names[0] if names else ""


def _aliases(env: Mapping[str, str], name: str) -> Mapping[str, str]:
    aliases = json_object(env, name)
    bad = [k for k, v in aliases.items() if not isinstance(v, str) or not v.split()]
    if bad:
        raise SettingsError(f"{name}: {', '.join(map(repr, bad))} must map to SMART scopes (a non-empty string)")
    return {k: " ".join(v.split()) for k, v in aliases.items()}


@dataclass(frozen=True)
class AccessSettings:
    """Authentication, authorization and the request headers that say who sends a request."""

    auth_jwks: str = field(
        default="",
        metadata={
            "env": "FHIR_PATCH_AUTH_JWKS",
            "doc": (
                "JWKS that signs bearer tokens: an http(s):// URL or a file path. `fhir-patch serve` makes a "
                "development key when unset."
            ),
        },
    )
    auth_issuer: str = field(
        default="", metadata={"env": "FHIR_PATCH_AUTH_ISSUER", "doc": "Required `iss` of bearer tokens."}
    )
    auth_audience: str = field(
        default="", metadata={"env": "FHIR_PATCH_AUTH_AUDIENCE", "doc": "Required `aud` of bearer tokens."}
    )
    auth_disabled: bool = field(
        default=False,
        metadata={
            "env": "FHIR_PATCH_AUTH_DISABLED",
            "read": lambda env, name, default: flag(env, name),
            "doc": (
                "true: no authentication or scopes at all (logged at start, stated in the CapabilityStatement). "
                "Never in production."
            ),
        },
    )
    auth_dpop: str = field(
        default="allowed",
        metadata={
            "env": "FHIR_PATCH_AUTH_DPOP",
            "read": lambda env, name, default: choice(env, name, DPOP_MODES),
            "doc": (
                "DPoP (RFC 9449) sender-constrained tokens. allowed: a token bound by `cnf.jkt` must come as "
                "`Authorization: DPoP` with a valid proof, others as Bearer. required: every token must be bound. "
                "off: the DPoP scheme and bound tokens are refused."
            ),
        },
    )
    auth_dpop_algorithms: tuple[str, ...] = field(
        default=ASYMMETRIC_ALGORITHMS,
        metadata={
            "env": "FHIR_PATCH_AUTH_DPOP_ALGORITHMS",
            "read": _algorithms,
            "doc": "Comma-separated JWS algorithms a DPoP proof may be signed with (asymmetric ones only).",
        },
    )
    auth_dpop_iat_seconds: float = field(
        default=60.0,
        metadata={
            "env": "FHIR_PATCH_AUTH_DPOP_IAT_SECONDS",
            "read": number,
            "doc": "How far a DPoP proof's `iat` may lie from now, either way; its `jti` is remembered twice as long.",
        },
    )
    auth_scope_aliases: Mapping[str, str] = field(
        default_factory=dict,
        metadata={
            "env": "FHIR_PATCH_AUTH_SCOPE_ALIASES",
            "read": lambda env, name, default: _aliases(env, name),
            "doc": (
                'JSON: a scope of the deployment -> the SMART scopes it grants, e.g. {"nhn:phr/mhd/create-documents-'
                'with-reference": "system/DocumentReference.u"}.'
            ),
        },
    )
    metrics_loopback: bool = field(
        default=False,
        metadata={
            "env": "FHIR_PATCH_METRICS_LOOPBACK",
            "read": lambda env, name, default: flag(env, name),
            "doc": (
                "true: /metrics answers loopback clients without a token; otherwise it needs the scope "
                "system/metrics.read."
            ),
        },
    )
    required_headers: tuple[str, ...] = field(
        default=(),
        metadata={
            "env": "FHIR_PATCH_REQUIRED_HEADERS",
            "read": lambda env, name, default: _header_names(env, name),
            "doc": (
                "Comma-separated headers every /fhir request but metadata must carry (400 naming a missing one); "
                "their values go in the Provenance of what the request writes. NHN: nhn-source-system."
            ),
        },
    )
    correlation_header: str = field(
        default="",
        metadata={
            "env": "FHIR_PATCH_CORRELATION_HEADER",
            "read": lambda env, name, default: _header_name(env, name),
            "doc": (
                "A header whose value is echoed on the answer, kept with the job, put in the Provenance and logged "
                "(NHN: nhn-event-id)."
            ),
        },
    )
