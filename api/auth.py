"""Bearer tokens: JWTs (RS256 or ES256) checked against a JWKS with PyJWT, turned into a Principal.

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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import jwt
from fastapi import Depends, Request

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


class Authenticator:
    """Verify a bearer token and say who it is and what it may do.

    A verified token is remembered (by its exact text) until it expires, but never longer than the key set is
    cached, so a key removed from the JWKS stops working within KEYS_MAX_AGE; clients send the same token for
    many requests, so most requests skip the signature check."""

    def __init__(self, settings: Settings, keys: KeySet | None = None, clock: Callable[[], float] = time.time) -> None:
        self.disabled = settings.auth_disabled
        if not self.disabled and not (settings.auth_jwks and settings.auth_issuer and settings.auth_audience):
            raise SettingsError(
                "FHIR_PATCH_AUTH_JWKS, FHIR_PATCH_AUTH_ISSUER and FHIR_PATCH_AUTH_AUDIENCE must be set "
                "(or FHIR_PATCH_AUTH_DISABLED=true, for development only)"
            )
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self.keys = keys or KeySet(settings.auth_jwks)
        self._clock = clock
        self._verified: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        now = self._clock()
        remembered = self._verified.get(token)
        if remembered is not None and now < remembered[0]:
            return remembered[1]
        principal, expires = self._check(token)
        with self._lock:
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified = {t: v for t, v in self._verified.items() if v[0] > now}
                if len(self._verified) >= VERIFIED_CACHE_SIZE:
                    self._verified.clear()
            self._verified[token] = (min(expires + LEEWAY_SECONDS, now + KEYS_MAX_AGE), principal)
        return principal

    def _check(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"The bearer token is not a JWT: {exc}") from exc
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
            raise Unauthenticated(f"The bearer token was refused: {exc}") from exc
        return principal_of(claims), float(claims["exp"])


def principal_of(claims: dict[str, Any]) -> Principal:
    scope = claims.get("scope", claims.get("scp", ""))
    text = " ".join(str(s) for s in scope) if isinstance(scope, list) else str(scope)
    subject = str(claims["sub"])
    return Principal(subject, str(claims.get("client_id") or subject), Grants.parse(text))


async def authenticated(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401. The principal is also kept on `request.state` for refusal logs."""
    authenticator: Authenticator = request.app.state.connections.authenticator
    if authenticator.disabled:
        return ANONYMOUS
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if not scheme:
        raise Unauthenticated("This request needs a bearer token (Authorization: Bearer <JWT>)", REALM)
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("The Authorization header must be `Bearer <JWT>`", 'Bearer error="invalid_request"')
    principal = await anyio.to_thread.run_sync(authenticator.verify, token.strip())
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(authenticated)]
