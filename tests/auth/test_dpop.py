"""DPoP (RFC 9449 §4.3) on the resource server: every check refuses its bad proof, with real keys and tokens.

The Authenticator is the one the API uses; these run it in process (milliseconds). The end-to-end cases (the
Redis replay set across requests, nothing written on a refusal) are in tests/pipeline/test_nhn.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from api.auth import Authenticator, Presented
from api.dpop import normalised_url
from devkit.dpop import ProofKey
from tests.support.tokens import TokenIssuer
from worker.errors import Unauthenticated
from worker.settings import Settings

URL = "https://registry.example.org/fhir/DocumentReference/doc-1"
NHN_SCOPE = "nhn:phr/mhd/create-documents-with-reference"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> TokenIssuer:
    return TokenIssuer(tmp_path_factory.mktemp("dpop") / "jwks.json")


@pytest.fixture(scope="module")
def client_key() -> ProofKey:
    return ProofKey("EC")


@pytest.fixture(scope="module")
def rsa_key() -> ProofKey:
    return ProofKey("RSA")


def _authenticator(issuer: TokenIssuer, **env: str) -> Authenticator:
    return Authenticator(Settings.from_env({**issuer.env(), **env}))


def _admit(authenticator: Authenticator, token: str, *proofs: str, scheme: str = "dpop", url: str = URL) -> str:
    return authenticator.admit(Presented(scheme, token, proofs, "PATCH", url)).subject


def test_a_bound_token_with_its_proof_is_admitted(issuer: TokenIssuer, client_key: ProofKey) -> None:
    token = issuer.token(cnf={"jkt": client_key.thumbprint}, sub="nhn-client")
    assert _admit(_authenticator(issuer), token, client_key.proof("PATCH", URL, token)) == "nhn-client"


def test_the_proof_of_the_cli_is_admitted(issuer: TokenIssuer, tmp_path: Path) -> None:
    from tools.dev_auth import dpop_key, dpop_proof

    key = dpop_key(tmp_path / "client.jwk")
    assert (tmp_path / "client.jwk").stat().st_mode & 0o077 == 0
    token = issuer.token(cnf={"jkt": key.thumbprint()})
    assert _admit(_authenticator(issuer), token, dpop_proof(key, "patch", URL + "?x=1", token)) == "tester"


def test_helseid_escaped_typ_and_rs512_are_admitted(issuer: TokenIssuer, rsa_key: ProofKey) -> None:
    token = issuer.token(cnf={"jkt": rsa_key.thumbprint})
    header = '{"typ":"dpop\\u002Bjwt","alg":"RS512","jwk":' + json.dumps(rsa_key.jwk) + "}"
    proof = rsa_key.proof("PATCH", URL, token, algorithm="RS512", header_text=header)
    assert _admit(_authenticator(issuer), token, proof) == "tester"


@pytest.mark.parametrize("algorithm", ["PS256", "RS384"])
def test_other_asymmetric_algorithms_are_admitted(issuer: TokenIssuer, rsa_key: ProofKey, algorithm: str) -> None:
    token = issuer.token(cnf={"jkt": rsa_key.thumbprint})
    assert _admit(_authenticator(issuer), token, rsa_key.proof("PATCH", URL, token, algorithm=algorithm))


def test_htu_is_compared_after_rfc3986_normalisation(issuer: TokenIssuer, client_key: ProofKey) -> None:
    token = issuer.token(cnf={"jkt": client_key.thumbprint})
    written = "HTTPS://Registry.Example.ORG:443/fhir/./DocumentReference/%64oc-1?ignored=1#and-this"
    assert normalised_url(written) == URL
    assert _admit(_authenticator(issuer), token, client_key.proof("PATCH", written, token))


BadProof = Callable[[ProofKey, str], list[str]]


def _bad_proofs() -> dict[str, tuple[str, BadProof]]:
    """case -> (what its refusal names, how to make it)."""
    other = ProofKey("EC")
    now = int(time.time())
    return {
        "no DPoP header": ("exactly one", lambda k, t: []),
        "two DPoP headers": ("exactly one", lambda k, t: [k.proof("PATCH", URL, t), k.proof("PATCH", URL, t)]),
        "not a JWS": ("not a compact JWS", lambda k, t: ["not-a-jws"]),
        "typ missing": ("typ", lambda k, t: [k.proof("PATCH", URL, t, header={"typ": None})]),
        "typ is jwt": ("typ", lambda k, t: [k.proof("PATCH", URL, t, header={"typ": "JWT"})]),
        "alg none": ("alg", lambda k, t: [k.proof("PATCH", URL, t, algorithm="none")]),
        "alg HS256 (symmetric)": ("alg", lambda k, t: [k.proof("PATCH", URL, t, header={"alg": "HS256"})]),
        "alg ES384, not on the list": ("alg", lambda k, t: [k.proof("PATCH", URL, t, header={"alg": "ES384"})]),
        "no jwk": ("public key (jwk)", lambda k, t: [k.proof("PATCH", URL, t, header={"jwk": None})]),
        "jwk with its private part": (
            "no private part",
            lambda k, t: [k.proof("PATCH", URL, t, header={"jwk": k.private_jwk})],
        ),
        "signed by another key than its jwk": ("signature", lambda k, t: [k.proof("PATCH", URL, t, signer=other)]),
        "htm of another method": ("htm", lambda k, t: [k.proof("POST", URL, t)]),
        "htu of another resource": ("htu", lambda k, t: [k.proof("PATCH", URL.replace("doc-1", "doc-2"), t)]),
        "htu of another host": ("htu", lambda k, t: [k.proof("PATCH", URL.replace("registry.", "evil."), t)]),
        "htu not a URL": ("htu", lambda k, t: [k.proof("PATCH", "/fhir/DocumentReference/doc-1", t)]),
        "iat 61 s old": ("iat", lambda k, t: [k.proof("PATCH", URL, t, iat=now - 61)]),
        "iat 61 s ahead": ("iat", lambda k, t: [k.proof("PATCH", URL, t, iat=now + 61)]),
        "no iat": ("iat", lambda k, t: [k.proof("PATCH", URL, t, iat=None)]),
        "no jti": ("jti", lambda k, t: [k.proof("PATCH", URL, t, jti=None)]),
        "no ath": ("ath", lambda k, t: [k.proof("PATCH", URL, None)]),
        "ath of another token": ("ath", lambda k, t: [k.proof("PATCH", URL, t + "x")]),
        "signed by a key the token is not bound to": ("cnf.jkt", lambda k, t: [other.proof("PATCH", URL, t)]),
    }


@pytest.mark.parametrize("case", sorted(_bad_proofs()))
def test_every_bad_proof_is_a_401_with_the_dpop_challenge(issuer: TokenIssuer, client_key: ProofKey, case: str) -> None:
    token = issuer.token(cnf={"jkt": client_key.thumbprint})
    names, make = _bad_proofs()[case]
    proofs = make(client_key, token)
    with pytest.raises(Unauthenticated) as refused:
        _admit(_authenticator(issuer, FHIR_PATCH_AUTH_DPOP_ALGORITHMS="ES256,RS512"), token, *proofs)
    challenge = refused.value.headers["WWW-Authenticate"]
    assert challenge.startswith('DPoP error="invalid_dpop_proof"') and 'algs="ES256 RS512"' in challenge
    diagnostics = refused.value.issues[0].diagnostics
    assert diagnostics.startswith("DPoP proof refused: ") and names in diagnostics


def test_a_replayed_proof_is_refused(issuer: TokenIssuer, client_key: ProofKey) -> None:
    authenticator = _authenticator(issuer)
    token = issuer.token(cnf={"jkt": client_key.thumbprint})
    proof = client_key.proof("PATCH", URL, token)
    _admit(authenticator, token, proof)
    with pytest.raises(Unauthenticated, match="used before"):
        _admit(authenticator, token, proof)


MODES = [
    ("allowed", "a bound token sent as Bearer", "bearer", True, "invalid_token"),
    ("allowed", "an unbound token sent as DPoP", "dpop", False, "invalid_token"),
    ("required", "an unbound Bearer token", "bearer", False, "invalid_token"),
    ("required", "a bound token sent as Bearer", "bearer", True, "invalid_token"),
    ("off", "a DPoP token", "dpop", True, None),
    ("off", "a bound token sent as Bearer", "bearer", True, "invalid_token"),
]


@pytest.mark.parametrize(("mode", "what", "scheme", "bound", "error"), MODES, ids=[f"{m[0]}: {m[1]}" for m in MODES])
def test_each_mode_refuses_what_it_must(
    issuer: TokenIssuer, client_key: ProofKey, mode: str, what: str, scheme: str, bound: bool, error: str | None
) -> None:
    token = issuer.token(**({"cnf": {"jkt": client_key.thumbprint}} if bound else {}))
    with pytest.raises(Unauthenticated) as refused:
        _admit(
            _authenticator(issuer, FHIR_PATCH_AUTH_DPOP=mode),
            token,
            client_key.proof("PATCH", URL, token),
            scheme=scheme,
        )
    challenge = refused.value.headers["WWW-Authenticate"]
    assert (f'error="{error}"' in challenge) if error else challenge.startswith("Bearer")


def test_unbound_bearer_tokens_still_work_unless_dpop_is_required(issuer: TokenIssuer) -> None:
    assert _admit(_authenticator(issuer), issuer.token(), scheme="bearer") == "tester"
    assert _admit(_authenticator(issuer, FHIR_PATCH_AUTH_DPOP="off"), issuer.token(), scheme="bearer")


def test_a_scope_alias_grants_what_it_maps_to_and_nothing_else(issuer: TokenIssuer) -> None:
    aliases = json.dumps({NHN_SCOPE: "system/DocumentReference.u"})
    caller = _authenticator(issuer, FHIR_PATCH_AUTH_SCOPE_ALIASES=aliases).verify(issuer.token(NHN_SCOPE))
    assert caller.grants.on("DocumentReference") == "u"
    assert caller.grants.on("Patient") == "" and not caller.grants.metrics
    assert _authenticator(issuer).verify(issuer.token(NHN_SCOPE)).grants.on("DocumentReference") == ""
