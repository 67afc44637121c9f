"""The local development signing key: `make run` stays one command and stays secure.

`fhir-patch serve` with no FHIR_PATCH_AUTH_* settings creates an ES256 key under
`.run/auth/` (private key readable by its owner only, public JWKS beside it) and
points the API at that JWKS file; nothing new listens on the network.
`fhir-patch token` signs a token with the same key, so a developer can call the
API at once. Real deployments set FHIR_PATCH_AUTH_JWKS to their issuer's keys.

`fhir-patch token --dpop-key FILE` binds the token to the client key in FILE (made on first use), and
`fhir-patch dpop-proof` signs the proof of one request with it (RFC 9449), so DPoP can be tried with curl.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey, JWKRegistry
from jwt.algorithms import ECAlgorithm

DEV_ISSUER = "urn:fhir-patch-worker:dev"
DEV_AUDIENCE = "fhir-patch-worker"
DEFAULT_DIR = Path(".run/auth")


@dataclass(frozen=True)
class DevKey:
    directory: Path

    @property
    def private_key(self) -> Path:
        return self.directory / "dev-signing-key.pem"

    @property
    def jwks(self) -> Path:
        return self.directory / "jwks.json"

    def environment(self) -> dict[str, str]:
        """The settings that make the API trust this key."""
        return {
            "FHIR_PATCH_AUTH_JWKS": str(self.jwks.resolve()),
            "FHIR_PATCH_AUTH_ISSUER": DEV_ISSUER,
            "FHIR_PATCH_AUTH_AUDIENCE": DEV_AUDIENCE,
        }


def ensure_dev_key(directory: Path = DEFAULT_DIR) -> DevKey:
    """The development key, created on first use (written to a temporary name, then renamed)."""
    key = DevKey(directory)
    if key.private_key.exists() and key.jwks.exists():
        return key
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    jwks = {"keys": [{**jwk, "kid": uuid.uuid4().hex, "alg": "ES256", "use": "sig"}]}
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key.private_key, pem, 0o600)
    _write(key.jwks, json.dumps(jwks, indent=2).encode(), 0o644)
    return key


def _write(path: Path, content: bytes, mode: int) -> None:
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    partial.replace(path)


def dev_token(
    key: DevKey, scope: str, subject: str, ttl: int, client_id: str | None = None, bound_to: str | None = None
) -> str:
    """A token signed with the development key; bound to a DPoP key when `bound_to` is its thumbprint."""
    if not key.private_key.exists():
        raise FileNotFoundError(f"no development key at {key.private_key}: run `make run` once (it creates it)")
    kid = json.loads(key.jwks.read_text())["keys"][0]["kid"]
    now = int(time.time())
    claims = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": subject,
        "client_id": client_id or subject,
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        **({"cnf": {"jkt": bound_to}} if bound_to else {}),
    }
    private = serialization.load_pem_private_key(key.private_key.read_bytes(), password=None)
    return jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})  # type: ignore[arg-type]


def dpop_key(path: Path) -> ECKey:
    """The client's DPoP key (P-256) in a JWK file, created on first use, readable by its owner only."""
    if path.exists():
        loaded = JWKRegistry.import_key(json.loads(path.read_text()))
        if not isinstance(loaded, ECKey) or not loaded.is_private:
            raise ValueError(f"{path} must hold a private EC (P-256) JWK")
        return loaded
    made = ECKey.generate_key("P-256", private=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, json.dumps(made.as_dict(private=True)).encode(), 0o600)
    return made


def dpop_proof(key: ECKey, method: str, url: str, token: str | None = None, **claims: object) -> str:
    """The DPoP proof of one request (ES256): htm, htu (no query), iat, a fresh jti and, with a token, its ath."""
    from api.dpop import token_hash

    body = {
        "htm": method.upper(),
        "htu": url.split("?", 1)[0].split("#", 1)[0],
        "iat": int(time.time()),
        "jti": uuid.uuid4().hex,
        **({"ath": token_hash(token)} if token else {}),
        **claims,
    }
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return jws.serialize_compact(header, json.dumps(body).encode(), key, algorithms=["ES256"])
