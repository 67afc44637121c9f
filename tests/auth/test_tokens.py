"""Bearer tokens against real keys: RSA and EC keys made here, a JWKS file and a JWKS served on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from api.auth import UNKNOWN_KID_REFRESH, Authenticator, KeySet, read_jwks
from tests.support.tokens import TokenIssuer
from worker.errors import ServiceBusy, Unauthenticated
from worker.settings import Settings, SettingsError


@pytest.fixture()
def issuer(tmp_path: Path) -> TokenIssuer:
    return TokenIssuer(tmp_path / "jwks.json")


def _authenticator(issuer: TokenIssuer, keys: KeySet | None = None) -> Authenticator:
    return Authenticator(Settings.from_env(issuer.env()), keys)


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_valid_token_names_its_subject_client_and_scopes(issuer: TokenIssuer, algorithm: str) -> None:
    token = issuer.token("system/Organization.u", sub="alice", algorithm=algorithm, client_id="registry-a")
    caller = _authenticator(issuer).verify(token)
    assert (caller.subject, caller.client_id) == ("alice", "registry-a")
    assert caller.grants.allows("Organization", "u") and not caller.grants.allows("Organization", "r")


def test_client_id_defaults_to_the_subject(issuer: TokenIssuer) -> None:
    assert _authenticator(issuer).verify(issuer.token(sub="bob")).client_id == "bob"


def _refused(issuer: TokenIssuer) -> dict[str, str]:
    now = int(time.time())
    other = TokenIssuer(issuer.path.with_name("other.json"))
    stolen_kid = other.token(headers={"kid": issuer.ec_kid})  # signed by another key under our key's id
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": issuer.ec_kid}).encode()).decode()
    claims = jwt.utils.base64url_encode(
        json.dumps({"sub": "x", "iss": "i", "aud": "a", "exp": now + 60}).encode()
    ).decode()
    public_pem = issuer.rsa_key.public_key().public_bytes(*_pem())
    return {
        "expired beyond the leeway": issuer.token(ttl=-61 - 60),
        "not valid before, beyond the leeway": issuer.token(nbf=now + 120),
        "wrong issuer": issuer.token(iss="https://elsewhere.invalid"),
        "wrong audience": issuer.token(aud="https://other-server.invalid"),
        "signed by another key": stolen_kid,
        "unsigned (alg none)": f"{header}.{claims}.",
        "HS256 with the public key as secret": _hs256_with(public_pem, issuer.rsa_kid, now),
        "not a JWT": "abc.def",
        "no subject": issuer.token(sub=None),  # type: ignore[arg-type]
        "no expiry": jwt.encode(
            {"iss": "https://issuer.test.invalid", "aud": "https://fhir-patch.test.invalid/fhir", "sub": "x"},
            issuer.ec_key,
            algorithm="ES256",
            headers={"kid": issuer.ec_kid},
        ),
        "unknown key id": issuer.token(headers={"kid": "no-such-key"}),
    }


def _hs256_with(secret: bytes, kid: str, now: int) -> str:
    """The key-confusion attack token (PyJWT itself refuses to make it, so it is made by hand here)."""
    import hashlib
    import hmac

    encode = jwt.utils.base64url_encode
    signing_input = (
        encode(json.dumps({"alg": "HS256", "kid": kid}).encode())
        + b"."
        + encode(
            json.dumps(
                {
                    "sub": "x",
                    "iss": "https://issuer.test.invalid",
                    "exp": now + 60,
                    "aud": "https://fhir-patch.test.invalid/fhir",
                }
            ).encode()
        )
    )
    return (signing_input + b"." + encode(hmac.new(secret, signing_input, hashlib.sha256).digest())).decode()


def _pem() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


def test_every_bad_token_is_a_401_with_a_challenge(issuer: TokenIssuer) -> None:
    authenticator = _authenticator(issuer)
    for why, token in _refused(issuer).items():
        with pytest.raises(Unauthenticated) as refused:
            authenticator.verify(token)
        assert refused.value.status == 401, why
        assert refused.value.headers["WWW-Authenticate"].startswith("Bearer error="), why
        assert refused.value.outcome["issue"][0]["code"] == "login", why


def test_sixty_seconds_of_clock_skew_are_tolerated(issuer: TokenIssuer) -> None:
    authenticator = _authenticator(issuer)
    assert authenticator.verify(issuer.token(ttl=-30)).subject == "tester"  # expired 30 s ago
    assert authenticator.verify(issuer.token(nbf=int(time.time()) + 30)).subject == "tester"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_unknown_kid_refreshes_at_most_once_per_30_seconds(issuer: TokenIssuer) -> None:
    clock = _Clock()
    keys = KeySet(str(issuer.path), clock=clock)
    authenticator = _authenticator(issuer, keys)
    authenticator.verify(issuer.token())
    assert keys.fetches == 1
    for _ in range(50):
        with pytest.raises(Unauthenticated):
            authenticator.verify(issuer.token(headers={"kid": f"made-up-{_}"}))
    assert keys.fetches == 1, "made-up kids within 30 s of the last fetch do not fetch again"
    clock.now += UNKNOWN_KID_REFRESH
    with pytest.raises(Unauthenticated):
        authenticator.verify(issuer.token(headers={"kid": "made-up-again"}))
    assert keys.fetches == 2


def test_a_jwks_that_cannot_be_fetched_gives_503_never_access(issuer: TokenIssuer, tmp_path: Path) -> None:
    keys = KeySet(str(tmp_path / "missing.json"))
    with pytest.raises(ServiceBusy) as busy:
        _authenticator(issuer, keys).verify(issuer.token())
    assert busy.value.status == 503 and "Retry-After" in busy.value.headers


@pytest.fixture()
def served_jwks(issuer: TokenIssuer) -> Iterator[tuple[str, dict[str, Any], list[int]]]:
    """The JWKS served on loopback; the test may replace the document (key rotation); hits are counted."""
    state: dict[str, Any] = {"document": issuer.jwks()}
    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            hits.append(1)
            body = json.dumps(state["document"]).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", state, hits
    finally:
        server.shutdown()
        server.server_close()


def test_keys_from_a_loopback_url_and_a_rotation(
    issuer: TokenIssuer, served_jwks: tuple[str, dict[str, Any], list[int]], tmp_path: Path
) -> None:
    url, state, hits = served_jwks
    assert read_jwks(url) == issuer.jwks()
    clock = _Clock()
    keys = KeySet(url, clock=clock)
    authenticator = Authenticator(Settings.from_env({**issuer.env(), "FHIR_PATCH_AUTH_JWKS": url}), keys)
    assert authenticator.verify(issuer.token(algorithm="RS256")).subject == "tester"
    rotated = TokenIssuer(tmp_path / "rotated.json")
    state["document"] = {"keys": issuer.jwks()["keys"] + rotated.jwks()["keys"]}
    token = jwt.encode(
        jwt.decode(issuer.token(), options={"verify_signature": False}),
        rotated.ec_key,
        algorithm="ES256",
        headers={"kid": rotated.ec_kid},
    )
    clock.now += UNKNOWN_KID_REFRESH
    assert authenticator.verify(token).subject == "tester", "a new kid is found by one refresh"
    assert len(hits) == 3


def test_auth_settings_are_required_unless_disabled() -> None:
    with pytest.raises(SettingsError, match="FHIR_PATCH_AUTH_JWKS"):
        Authenticator(Settings.from_env({}))
    assert Authenticator(Settings.from_env({"FHIR_PATCH_AUTH_DISABLED": "true"})).disabled


def test_a_remembered_token_still_expires(issuer: TokenIssuer) -> None:
    authenticator = Authenticator(Settings.from_env(issuer.env()))
    token = issuer.token(ttl=-59)  # expired 59 s ago: valid for one more second of leeway
    assert authenticator.verify(token).subject == "tester"
    assert authenticator.verify(token).subject == "tester"  # remembered
    time.sleep(1.5)
    with pytest.raises(Unauthenticated, match="expired"):
        authenticator.verify(token)
