"""What a bearer token costs the API: verifications per second on one core, ES256 and RS256, JSON out.

    .venv/bin/python bench/auth.py [--seconds 3]

Keys and the JWKS file are made here; the Authenticator is the API's own (PyJWT), so the figure is the
per-request cost of authentication (the JWKS is cached, so no fetch is in it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.auth import Authenticator  # noqa: E402
from tools.dev_auth import DEV_AUDIENCE, DEV_ISSUER, dev_token, ensure_dev_key  # noqa: E402
from worker.settings import Settings  # noqa: E402


def rate(authenticator: Authenticator, token: str, seconds: float) -> dict[str, float]:
    authenticator.verify(token)  # warm the key cache
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        authenticator.verify(token)
        count += 1
    elapsed = time.perf_counter() - started
    return {"verifications_per_s": round(count / elapsed), "us_per_verification": round(elapsed / count * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key = ensure_dev_key(Path(tmp))
        authenticator = Authenticator(Settings.from_env(key.environment()))
        es256 = rate(authenticator, dev_token(key, "system/*.cruds", "bench", 3600), args.seconds)
        rs256 = _rs256(Path(tmp), args.seconds)
    print(json.dumps({"ES256": es256, "RS256-2048": rs256, "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE}, indent=2))


def _rs256(folder: Path, seconds: float) -> dict[str, float]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(private.public_key())), "kid": "rsa", "alg": "RS256"}
    (folder / "rsa.json").write_text(json.dumps({"keys": [jwk]}))
    settings = Settings.from_env(
        {
            "FHIR_PATCH_AUTH_JWKS": str(folder / "rsa.json"),
            "FHIR_PATCH_AUTH_ISSUER": "i",
            "FHIR_PATCH_AUTH_AUDIENCE": "a",
        }
    )
    now = int(time.time())
    token = jwt.encode(
        {"iss": "i", "aud": "a", "sub": "bench", "exp": now + 3600, "scope": "system/*.cruds"},
        private,
        algorithm="RS256",
        headers={"kid": "rsa"},
    )
    return rate(Authenticator(settings), token, seconds)


if __name__ == "__main__":
    main()
