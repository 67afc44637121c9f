"""A real token issuer for tests: RSA and EC keys made here, a JWKS file, and signed JWTs (PyJWT)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.test.invalid"
AUDIENCE = "https://fhir-patch.test.invalid/fhir"
ADMIN_SCOPE = "system/*.cruds system/jobs.admin system/metrics.read"


@dataclass
class TokenIssuer:
    """Signs tokens with its own RS256 and ES256 keys; `jwks` is the public key set, written to `path`."""

    path: Path
    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rsa_kid: str = field(default_factory=lambda: uuid.uuid4().hex)
    ec_kid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.path.write_text(json.dumps(self.jwks()))

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = {
            **json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key())),
            "kid": self.rsa_kid,
            "alg": "RS256",
            "use": "sig",
        }
        ec_jwk = {
            **json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key())),
            "kid": self.ec_kid,
            "alg": "ES256",
            "use": "sig",
        }
        return {"keys": [rsa_jwk, ec_jwk]}

    def env(self) -> dict[str, str]:
        return {
            "FHIR_PATCH_AUTH_JWKS": str(self.path),
            "FHIR_PATCH_AUTH_ISSUER": ISSUER,
            "FHIR_PATCH_AUTH_AUDIENCE": AUDIENCE,
        }

    def token(
        self,
        scope: str = ADMIN_SCOPE,
        sub: str = "tester",
        algorithm: str = "ES256",
        ttl: int = 3600,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        key, kid = (self.ec_key, self.ec_kid) if algorithm == "ES256" else (self.rsa_key, self.rsa_kid)
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid, **(headers or {})})

    def bearer(self, scope: str = ADMIN_SCOPE, sub: str = "tester", **claims: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(scope, sub, **claims)}"}
