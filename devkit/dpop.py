"""DPoP proofs for tests and benchmarks, made here with real keys (RFC 9449): good ones, and each kind of bad one.

`signed` writes the header's JSON text itself, so a test can send HelseID's `dpop\\u002Bjwt`, a private key in
`jwk`, or `alg: none`, none of which a JOSE library would produce.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, RSAKey

from api.dpop import token_hash

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class ProofKey:
    """A client's DPoP key: EC P-256 (ES256) or RSA 2048 (RS*/PS*)."""

    kind: str = "EC"
    private: Any = field(default=None)

    def __post_init__(self) -> None:
        if self.private is None:
            self.private = (
                ec.generate_private_key(ec.SECP256R1())
                if self.kind == "EC"
                else rsa.generate_private_key(public_exponent=65537, key_size=2048)
            )

    @property
    def jwk(self) -> dict[str, Any]:
        """The public JWK (what a proof's header carries)."""
        key = ECKey.import_key(self.private) if self.kind == "EC" else RSAKey.import_key(self.private)
        return dict(key.as_dict(private=False))

    @property
    def private_jwk(self) -> dict[str, Any]:
        key = ECKey.import_key(self.private) if self.kind == "EC" else RSAKey.import_key(self.private)
        return dict(key.as_dict(private=True))

    @property
    def thumbprint(self) -> str:
        key = ECKey.import_key(self.private) if self.kind == "EC" else RSAKey.import_key(self.private)
        return key.thumbprint()

    def sign(self, algorithm: str, data: bytes) -> bytes:
        digest = _HASHES[algorithm[2:]]()
        if algorithm.startswith("ES"):
            r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(digest)))
            size = (self.private.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        pad = (
            padding.PKCS1v15()
            if algorithm.startswith("RS")
            else padding.PSS(padding.MGF1(digest), padding.PSS.DIGEST_LENGTH)
        )
        return bytes(self.private.sign(data, pad, digest))

    def proof(
        self,
        method: str,
        url: str,
        token: str | None,
        algorithm: str = "",
        header: dict[str, Any] | None = None,
        header_text: str | None = None,
        signer: ProofKey | None = None,
        **claims: Any,
    ) -> str:
        """A proof of (method, url) for `token`; `header`/`claims` entries override (None removes one)."""
        algorithm = algorithm or ("ES256" if self.kind == "EC" else "RS256")
        body = {"htm": method, "htu": url, "iat": int(time.time()), "jti": uuid.uuid4().hex}
        if token is not None:
            body["ath"] = token_hash(token)
        body = {k: v for k, v in {**body, **claims}.items() if v is not None}
        head = {"typ": "dpop+jwt", "alg": algorithm, "jwk": self.jwk}
        head = {k: v for k, v in {**head, **(header or {})}.items() if v is not None}
        return signed(header_text or json.dumps(head), json.dumps(body), signer or self, algorithm)


def signed(header_text: str, payload_text: str, key: ProofKey, algorithm: str) -> str:
    signing_input = f"{b64url(header_text.encode())}.{b64url(payload_text.encode())}"
    if algorithm == "none":
        return f"{signing_input}."
    return f"{signing_input}.{b64url(key.sign(algorithm, signing_input.encode()))}"
