"""What a token costs the API: verifications per second on one core, ES256 and RS256, and the DPoP proof check
(RFC 9449) a bound token adds to every request, ES256 and RS512 proofs; JSON out.

    .venv/bin/python bench/auth.py [--seconds 3] [--redis redis://127.0.0.1:6379/0]

Keys and the JWKS file are made here; the Authenticator is the API's own (PyJWT, joserfc for proofs), so the
figure is the per-request cost of authentication (the JWKS is cached, so no fetch is in it; a token is verified
once and remembered, a proof is checked every time). Proofs are signed before the clock starts, one per request.
The replay set is in process unless --redis names a Redis: then each proof also costs its `SET NX` round trip.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.auth import Authenticator, Presented  # noqa: E402
from api.dpop import MemoryReplays, ReplaySet  # noqa: E402
from tools.dev_auth import DEV_AUDIENCE, DEV_ISSUER, DevKey, dev_token, ensure_dev_key  # noqa: E402
from worker.settings import Settings  # noqa: E402


def rate(authenticator: Authenticator, sign: Callable[[int], str], seconds: float) -> dict[str, float]:
    """A first verification (signature, claims) of distinct tokens, and a remembered one (the same token again)."""
    tokens = [sign(n) for n in range(max(200, int(seconds * 2000)))]
    authenticator.verify(tokens.pop())  # warm the key cache
    started = time.perf_counter()
    for token in tokens:
        authenticator.verify(token)
    first = (time.perf_counter() - started) / len(tokens)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds / 4:
        authenticator.verify(tokens[0])
        count += 1
    remembered = (time.perf_counter() - started) / count
    return {"us_per_first_verification": round(first * 1e6, 1), "us_per_remembered": round(remembered * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--redis", help="a Redis URL for the DPoP replay set (default: in process)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key = ensure_dev_key(Path(tmp))
        authenticator = Authenticator(Settings.from_env(key.environment()))
        es256 = rate(authenticator, lambda n: dev_token(key, "system/*.cruds", f"bench-{n}", 3600), args.seconds)
        rs256 = _rs256(Path(tmp), args.seconds)
        dpop = {kind: _dpop(key, kind, args.seconds, args.redis) for kind in ("EC", "RSA")}
    report = {"ES256": es256, "RS256-2048": rs256, "dpop": dpop, "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE}
    print(json.dumps(report, indent=2))


def _dpop(key: DevKey, kind: str, seconds: float, redis_url: str | None) -> dict[str, object]:
    """admit() of a bound token with a fresh proof each time: the token check is cached, the proof is not."""
    from devkit.dpop import ProofKey

    proof_key = ProofKey(kind)
    algorithm = "ES256" if kind == "EC" else "RS512"
    replays, close = _replay_set(redis_url)
    authenticator = Authenticator(Settings.from_env(key.environment()), replays=replays)
    token = dev_token(key, "system/*.cruds", "bench", 3600, bound_to=proof_key.thumbprint)
    url = "http://127.0.0.1:8080/fhir/Organization/1"
    count = max(200, int(seconds * 3000))
    proofs = [proof_key.proof("PATCH", url, token, algorithm=algorithm) for _ in range(count)]
    authenticator.admit(Presented("dpop", token, (proofs.pop(),), "PATCH", url))  # warm the token cache
    started = time.perf_counter()
    for proof in proofs:
        authenticator.admit(Presented("dpop", token, (proof,), "PATCH", url))
    elapsed = time.perf_counter() - started
    close()
    per = elapsed / len(proofs)
    return {
        "proof_alg": algorithm,
        "replay_set": "redis" if redis_url else "in process",
        "checks_per_s": round(1 / per),
        "us_per_check": round(per * 1e6, 1),
    }


def _replay_set(redis_url: str | None) -> tuple[ReplaySet, Callable[[], None]]:
    if not redis_url:
        return MemoryReplays(), lambda: None
    import redis

    from worker.ordering.replays import ProofReplays
    from worker.schedule.keys import RedisKeys

    client = redis.Redis.from_url(redis_url)
    return ProofReplays(client, RedisKeys(f"bench-{time.time_ns()}")), client.close


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

    def sign(n: int) -> str:
        claims = {"iss": "i", "aud": "a", "sub": f"bench-{n}", "exp": now + 3600, "scope": "system/*.cruds"}
        return jwt.encode(claims, private, algorithm="RS256", headers={"kid": "rsa"})

    return rate(Authenticator(settings), sign, seconds)


if __name__ == "__main__":
    main()
