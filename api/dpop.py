"""DPoP proofs (RFC 9449) checked by the resource server: the JOSE work is joserfc's, the rules of §4.3 are ours.

A DPoP-bound token (`cnf.jkt`) arrives as `Authorization: DPoP <token>` with one `DPoP: <proof>` header. The
proof is a JWT the client signs for this one request with the key the token is bound to. Every check of §4.3:
- one proof, a well-formed JWS whose `typ` is `dpop+jwt` (compared after JSON parsing, so HelseID's
  `dpop\\u002Bjwt` is the same), signed with an allowed asymmetric `alg`;
- the signature verifies with the header's `jwk`, which is a public key (no private members);
- `htm` is the request's method, `htu` its external URL without query or fragment (both normalised per
  RFC 3986, by yarl), `iat` within the window of now, `ath` the token's hash;
- the RFC 7638 thumbprint of `jwk` is the token's `cnf.jkt`;
- the `jti` has not been seen in the window: the replay set (Redis, shared by every API process) remembers it.

Any failure is a 401 with `WWW-Authenticate: DPoP error="invalid_dpop_proof", algs="..."`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import yarl
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

from worker.errors import Unauthenticated

PROOF_TYPE = "dpop+jwt"
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MAX_PROOF_BYTES = 8192  # a 4096-bit RSA key in the header, with room to spare
_MAX_JTI = 256


class ReplaySet(Protocol):
    """Where the proofs' `jti`s are remembered (Redis in the service, shared by every API process)."""

    def first_use(self, key: str, seconds: float) -> bool:
        """True the first time `key` is offered within `seconds`; False for a replay."""
        ...


class MemoryReplays:
    """A replay set of one process (tests, benchmarks, a single API process); the service uses Redis's."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, key: str, seconds: float) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) > 100_000:
                self._seen = {k: until for k, until in self._seen.items() if until > now}
            if self._seen.get(key, now) > now:
                return False
            self._seen[key] = now + seconds
            return True


@dataclass(frozen=True)
class ProofRules:
    algorithms: tuple[str, ...]
    iat_seconds: float

    def challenge(self, error: str, description: str = "") -> str:
        """The DPoP challenge of a refusal (RFC 9449 §7.1)."""
        described = f', error_description="{description}"' if description else ""
        return f'DPoP error="{error}"{described}, algs="{" ".join(self.algorithms)}"'

    @property
    def offer(self) -> str:
        """The DPoP challenge of a request that sent no credentials."""
        return f'DPoP algs="{" ".join(self.algorithms)}"'


@functools.lru_cache(maxsize=4096)
def _imported(jwk: str) -> tuple[Any, str]:
    """A client's public key and its RFC 7638 thumbprint, from its JWK's text (sorted keys): a client signs its
    proofs with one key for many requests, and importing it is half the cost of a check (bench/auth.py)."""
    key = JWKRegistry.import_key(json.loads(jwk))
    return key, key.thumbprint()


def token_hash(token: str) -> str:
    """`ath`: base64url(SHA-256(the access token's ASCII)), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode("ascii")).digest()).rstrip(b"=").decode()


def normalised_url(url: str) -> str:
    """The URL without query and fragment, normalised per RFC 3986 (case, default port, dot segments,
    unreserved characters decoded)."""
    parsed = yarl.URL(url)
    if not parsed.absolute:
        raise ValueError("not an absolute URL")
    return str(parsed.with_query(None).with_fragment(None))


@dataclass(frozen=True)
class ProofRequest:
    """What a proof must match: the request's method and external URL, the token and the key it is bound to."""

    method: str
    url: str
    token: str
    thumbprint: str


class ProofChecker:
    def __init__(self, rules: ProofRules, replays: ReplaySet, clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self._replays = replays
        self._clock = clock
        self._registry = jws.JWSRegistry(algorithms=list(rules.algorithms))
        self._registry.max_header_length = _MAX_PROOF_BYTES

    def check(self, proofs: Sequence[str], request: ProofRequest) -> None:
        """Unauthenticated (invalid_dpop_proof) unless exactly one proof is given and it passes every check."""
        if len(proofs) != 1 or "," in proofs[0]:
            self._refuse(f"send exactly one DPoP header (got {len(proofs)})" if len(proofs) != 1 else "one proof")
        claims = self._verified(proofs[0].strip())
        self._check_claims(claims, request)
        jti = claims["jti"]
        key = f"{request.thumbprint}:{hashlib.sha256(jti.encode()).hexdigest()}"
        if not self._replays.first_use(key, 2 * self.rules.iat_seconds):
            self._refuse("the proof's jti was used before: a proof is good for one request")

    def _verified(self, proof: str) -> dict[str, Any]:
        if len(proof) > _MAX_PROOF_BYTES:
            self._refuse(f"the proof is over {_MAX_PROOF_BYTES} bytes")
        try:
            header = jws.extract_compact(proof.encode("ascii"), registry=self._registry).headers()
        except (JoseError, ValueError) as exc:
            self._refuse(f"the DPoP header is not a compact JWS: {exc}")
        if header.get("typ") != PROOF_TYPE:
            self._refuse(f"the proof's typ must be {PROOF_TYPE!r}, got {header.get('typ')!r}")
        if header.get("alg") not in self.rules.algorithms:
            self._refuse(f"the proof's alg {header.get('alg')!r} is not one of {', '.join(self.rules.algorithms)}")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC") or _PRIVATE_MEMBERS & set(jwk):
            self._refuse("the proof's header must carry the public key (jwk) it is signed with, and no private part")
        try:
            key, thumbprint = _imported(json.dumps(jwk, sort_keys=True))
            payload = jws.deserialize_compact(proof, key, algorithms=[header["alg"]], registry=self._registry).payload
            claims = json.loads(payload)
        except (JoseError, ValueError, TypeError) as exc:
            self._refuse(f"the proof's signature does not verify with its jwk: {exc}")
        if not isinstance(claims, dict):
            self._refuse("the proof's payload must be a JSON object")
        claims["_jkt"] = thumbprint
        return claims

    def _check_claims(self, claims: dict[str, Any], request: ProofRequest) -> None:
        jti, iat = claims.get("jti"), claims.get("iat")
        if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
            self._refuse(f"the proof needs a jti of 1 to {_MAX_JTI} characters")
        if claims.get("htm") != request.method:
            self._refuse(f"the proof's htm {claims.get('htm')!r} is not this request's method {request.method}")
        if not self._same_url(claims.get("htu"), request.url):
            self._refuse(f"the proof's htu {claims.get('htu')!r} is not this request's URL {request.url}")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            self._refuse("the proof needs an iat (seconds since the epoch)")
        if abs(self._clock() - iat) > self.rules.iat_seconds:
            self._refuse(f"the proof's iat is more than {self.rules.iat_seconds:g} s from now")
        if claims.get("ath") != token_hash(request.token):
            self._refuse("the proof's ath is not the hash of this access token")
        if claims["_jkt"] != request.thumbprint:
            self._refuse("the proof is signed with a key other than the one the token is bound to (cnf.jkt)")

    @staticmethod
    def _same_url(claimed: object, actual: str) -> bool:
        try:
            return isinstance(claimed, str) and normalised_url(claimed) == normalised_url(actual)
        except ValueError:
            return False

    def _refuse(self, why: str) -> NoReturn:
        raise Unauthenticated(f"DPoP proof refused: {why}", self.rules.challenge("invalid_dpop_proof"))
