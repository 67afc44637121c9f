"""Access tokens: JWTs (RS256 or ES256) checked against a JWKS with PyJWT, turned into a Principal.

A token bound to a key (`cnf.jkt`, RFC 9449) must come as `Authorization: DPoP` with a proof (api/dpop.py);
FHIR_PATCH_AUTH_DPOP says whether unbound Bearer tokens are still taken. The deployment's own scope names are
read as the SMART scopes FHIR_PATCH_AUTH_SCOPE_ALIASES maps them to.

The JWKS (a URL or a file) is cached for `KEYS_MAX_AGE` seconds. A token whose
`kid` is not in the cached set triggers at most one refresh per
`UNKNOWN_KID_REFRESH` seconds, so a flood of made-up kids cannot make us hammer
the key server. When no fresh key set can be had the answer is 503, never
access. Every refusal is a 401 with a `WWW-Authenticate` challenge.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import jwt
from fastapi import Depends, Request

from api.dpop import MemoryReplays, ProofChecker, ProofRequest, ProofRules, ReplaySet
from worker.errors import ServiceBusy, Unauthenticated
from worker.model.access import ANONYMOUS, Grants, Principal
from worker.settings import Settings, SettingsError

log = logging.getLogger("fhir_patch.auth")

ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 60
KEYS_MAX_AGE = 300.0
UNKNOWN_KID_REFRESH = 30.0
FAILED_FETCH_RETRY = 1.0
VERIFIED_CACHE_SIZE = 10_000
REALM = 'Bearer realm="fhir-patch-worker"'


def read_jwks(location: str) -> dict[str, Any]:
    """The JWKS document at an http(s) URL or in a file."""
    if location.startswith(("http://", "https://")):
        with httpx.Client(timeout=5.0, trust_env=False, follow_redirects=False) as client:
            answer = client.get(location)
            answer.raise_for_status()
            document = answer.json()
    else:
        document = json.loads(Path(location).read_text())
    if not isinstance(document, dict):
        raise ValueError("a JWKS is a JSON object with a `keys` list")
    return document


class KeySet:
    """The verification keys, cached; thread-safe (tokens are checked in worker threads)."""

    def __init__(
        self,
        location: str,
        fetch: Callable[[str], dict[str, Any]] = read_jwks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._location = location
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at = float("-inf")
        self._attempted_at = float("-inf")
        self.fetches = 0

    def key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            if now - self._loaded_at >= KEYS_MAX_AGE:
                if now - self._attempted_at < FAILED_FETCH_RETRY or not self._refresh(now):
                    raise ServiceBusy(
                        "The token signing keys (JWKS) cannot be fetched right now; try again", "Authorization"
                    )
            found = self._find(kid)
            if found is None and now - self._attempted_at >= UNKNOWN_KID_REFRESH and self._refresh(now):
                found = self._find(kid)
        if found is None:
            raise Unauthenticated(f"The token's key id {kid!r} is not among the issuer's keys")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _refresh(self, now: float) -> bool:
        self._attempted_at = now
        self.fetches += 1
        try:
            document = self._fetch(self._location)
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (OSError, ValueError, httpx.HTTPError, jwt.PyJWTError) as exc:
            log.warning("JWKS not fetched: %s", exc, extra={"jwks": self._location})
            return False
        self._keys = {key.key_id: key for key in keys}
        self._loaded_at = now
        return True


@dataclass(frozen=True)
class Verified:
    """A verified token: who, until when, and the key thumbprint it is bound to (`cnf.jkt`), if any."""

    principal: Principal
    expires: float
    bound_to: str | None


@dataclass(frozen=True)
class Presented:
    """The credentials of one request: the Authorization scheme (lower case) and token, its DPoP headers, and
    what a proof must match (method, external URL)."""

    scheme: str
    token: str
    proofs: tuple[str, ...]
    method: str
    url: str


class Authenticator:
    """Verify a token (and its DPoP proof) and say who it is and what it may do.

    A verified token is remembered (by its exact text) until it expires, but never longer than the key set is
    cached, so a key removed from the JWKS stops working within KEYS_MAX_AGE; clients send the same token for
    many requests, so most requests skip the signature check. A DPoP proof is checked on every request."""

    def __init__(
        self,
        settings: Settings,
        keys: KeySet | None = None,
        clock: Callable[[], float] = time.time,
        replays: ReplaySet | None = None,
    ) -> None:
        self.disabled = settings.auth_disabled
        if not self.disabled and not (settings.auth_jwks and settings.auth_issuer and settings.auth_audience):
            raise SettingsError(
                "FHIR_PATCH_AUTH_JWKS, FHIR_PATCH_AUTH_ISSUER and FHIR_PATCH_AUTH_AUDIENCE must be set "
                "(or FHIR_PATCH_AUTH_DISABLED=true, for development only)"
            )
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._aliases = settings.auth_scope_aliases
        self.dpop = settings.auth_dpop
        self.rules = ProofRules(settings.auth_dpop_algorithms, settings.auth_dpop_iat_seconds)
        self._proofs = ProofChecker(self.rules, replays or MemoryReplays(), clock)
        self.keys = keys or KeySet(settings.auth_jwks)
        self._clock = clock
        self._verified: dict[str, Verified] = {}
        self._lock = threading.Lock()

    @property
    def challenge(self) -> str:
        """What a request without credentials is told to send."""
        return {"off": REALM, "allowed": f"{REALM}, {self.rules.offer}", "required": self.rules.offer}[self.dpop]

    def admit(self, presented: Presented) -> Principal:
        """The caller of a request, or Unauthenticated: the token verified, then bound or not as the scheme says."""
        if presented.scheme == "dpop" and self.dpop == "off":
            raise Unauthenticated("This server does not take DPoP tokens; send `Authorization: Bearer <JWT>`", REALM)
        if presented.scheme == "bearer" and self.dpop == "required":
            raise Unauthenticated(
                "This server takes DPoP-bound tokens only: send `Authorization: DPoP <JWT>` with a DPoP proof",
                self.rules.challenge("invalid_token"),
            )
        verified = self._remembered(presented.token)
        if presented.scheme == "bearer":
            if verified.bound_to is not None:
                raise Unauthenticated(
                    "The token is DPoP-bound (cnf.jkt): send it as `Authorization: DPoP` with a proof",
                    self.rules.challenge("invalid_token"),
                )
            return verified.principal
        if verified.bound_to is None:
            raise Unauthenticated(
                "The token is not DPoP-bound (it has no cnf.jkt): send it as Bearer",
                self.rules.challenge("invalid_token"),
            )
        self._proofs.check(
            presented.proofs, ProofRequest(presented.method, presented.url, presented.token, verified.bound_to)
        )
        return verified.principal

    def verify(self, token: str) -> Principal:
        """The caller a token names (signature, issuer, audience and lifetime checked), or Unauthenticated."""
        return self._remembered(token).principal

    def _remembered(self, token: str) -> Verified:
        now = self._clock()
        remembered = self._verified.get(token)
        if remembered is not None and now < remembered.expires:
            return remembered
        checked = self._check(token)
        remembered = Verified(
            checked.principal, min(checked.expires + LEEWAY_SECONDS, now + KEYS_MAX_AGE), checked.bound_to
        )
        with self._lock:
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified = {t: v for t, v in self._verified.items() if v.expires > now}
                if len(self._verified) >= VERIFIED_CACHE_SIZE:
                    self._verified.clear()
            self._verified[token] = remembered
        return remembered

    def _check(self, token: str) -> Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"The access token is not a JWT: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(
                f"The token is signed with {algorithm!r}; this server accepts {' or '.join(ALGORITHMS)}"
            )
        key = self.keys.key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"The access token was refused: {exc}") from exc
        return Verified(principal_of(claims, self._aliases), float(claims["exp"]), _bound_to(claims))


def _bound_to(claims: dict[str, Any]) -> str | None:
    confirmation = claims.get("cnf")
    if confirmation is None:
        return None
    if not isinstance(confirmation, dict) or not isinstance(confirmation.get("jkt"), str):
        raise Unauthenticated("The token's cnf claim must hold a jkt (a JWK SHA-256 thumbprint, RFC 9449)")
    jkt: str = confirmation["jkt"]
    return jkt


def principal_of(claims: dict[str, Any], aliases: Mapping[str, str] | None = None) -> Principal:
    """The caller a token's claims name; a scope of the deployment counts as the SMART scopes it is an alias of."""
    scope = claims.get("scope", claims.get("scp", ""))
    words = [str(s) for s in scope] if isinstance(scope, list) else str(scope).split()
    text = " ".join((aliases or {}).get(word, word) for word in words)
    subject = str(claims["sub"])
    return Principal(subject, str(claims.get("client_id") or subject), Grants.parse(text))


async def authenticated(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401. The principal is also kept on `request.state` for refusal logs."""
    authenticator: Authenticator = request.app.state.connections.authenticator
    if authenticator.disabled:
        return ANONYMOUS
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if not scheme:
        raise Unauthenticated(
            "This request needs an access token (Authorization: Bearer <JWT>, or DPoP <JWT> with a proof)",
            authenticator.challenge,
        )
    if scheme.lower() not in ("bearer", "dpop") or not token.strip():
        raise Unauthenticated(
            "The Authorization header must be `Bearer <JWT>` or `DPoP <JWT>`", 'Bearer error="invalid_request"'
        )
    presented = Presented(
        scheme.lower(), token.strip(), tuple(request.headers.getlist("dpop")), request.method, external_url(request)
    )
    principal = await anyio.to_thread.run_sync(authenticator.admit, presented)
    request.state.principal = principal
    return principal


def external_url(request: Request) -> str:
    """The URL the client used: FHIR_PATCH_BASE_URL stands for `/fhir` behind a proxy; the query is left out."""
    base: str = request.app.state.connections.settings.base_url
    path = request.url.path
    if base and (path == "/fhir" or path.startswith("/fhir/")):
        return base + path.removeprefix("/fhir")
    return str(request.url.replace(query=None, fragment=None))


Caller = Annotated[Principal, Depends(authenticated)]
