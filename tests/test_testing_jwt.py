"""TokenIssuer signs tokens and rejects the ones distribution 2.8 would reject."""

from __future__ import annotations

import base64
import json
import time

import pytest

from aociauth.testing._jwt import TokenIssuer

ACCESS = [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]


@pytest.fixture(scope="module", params=["ES256", "RS256"])
def issuer(request: pytest.FixtureRequest) -> TokenIssuer:
    return TokenIssuer(algorithm=request.param)


def _segment(token: str, index: int) -> dict[str, object]:
    part = token.split(".")[index]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def test_issued_token_verifies_with_claims_the_registry_needs(issuer: TokenIssuer) -> None:
    token = issuer.issue(subject="alice", access=ACCESS, expires_in=300)
    claims = issuer.verify(token)
    assert claims["iss"] == "aociauth-test-issuer"
    assert claims["aud"] == "aociauth-test-registry"
    assert claims["sub"] == "alice"
    assert claims["access"] == ACCESS
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"]
    assert isinstance(claims["jti"], str)
    assert claims["jti"]


def test_header_carries_typ_alg_and_the_leaf_certificate(issuer: TokenIssuer) -> None:
    header = _segment(issuer.issue(subject="a", access=[], expires_in=1), 0)
    assert header["typ"] == "JWT"
    assert header["alg"] == issuer.algorithm
    x5c = header["x5c"]
    assert isinstance(x5c, list)
    assert len(x5c) == 1
    leaf_der = base64.b64decode(issuer.leaf_cert_pem.split(b"\n", 1)[1].rsplit(b"-----END", 1)[0])
    assert base64.b64decode(x5c[0]) == leaf_der
    assert issuer.root_cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_tampered_signature_is_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(subject="alice", access=ACCESS, expires_in=300)
    head, claims, sig = token.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    with pytest.raises(ValueError, match="signature"):
        issuer.verify(f"{head}.{claims}.{flipped}")


def test_tampered_claims_are_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(subject="alice", access=[], expires_in=300)
    head, _, sig = token.split(".")
    forged = issuer.issue(subject="alice", access=ACCESS, expires_in=300).split(".")[1]
    with pytest.raises(ValueError, match="signature"):
        issuer.verify(f"{head}.{forged}.{sig}")


def test_token_from_another_issuer_is_rejected() -> None:
    ours = TokenIssuer()
    theirs = TokenIssuer()
    with pytest.raises(ValueError, match="chain"):
        ours.verify(theirs.issue(subject="alice", access=ACCESS, expires_in=300))


def test_wrong_audience_is_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(subject="alice", access=ACCESS, expires_in=300, audience="other")
    with pytest.raises(ValueError, match="audience"):
        issuer.verify(token)


def test_wrong_issuer_name_is_rejected() -> None:
    issuer = TokenIssuer(issuer="someone-else")
    token = issuer.issue(subject="alice", access=ACCESS, expires_in=300)
    issuer.issuer = "aociauth-test-issuer"
    with pytest.raises(ValueError, match="issuer"):
        issuer.verify(token)


def test_expiry_gets_sixty_seconds_of_leeway(issuer: TokenIssuer) -> None:
    now = float(int(time.time()))
    token = issuer.issue(subject="alice", access=ACCESS, expires_in=10, now=now - 100)
    # Expired 90 s ago: beyond the leeway.
    with pytest.raises(ValueError, match="expired"):
        issuer.verify(token, now=now)
    # Expired 30 s ago: within the leeway.
    assert issuer.verify(token, now=now - 60)["sub"] == "alice"
    assert issuer.verify(token, leeway=0, now=now - 90)["sub"] == "alice"
    with pytest.raises(ValueError, match="expired"):
        issuer.verify(token, leeway=0, now=now - 89)


def test_not_before_gets_leeway_too(issuer: TokenIssuer) -> None:
    now = float(int(time.time()))
    token = issuer.issue(subject="alice", access=ACCESS, expires_in=300, now=now + 30)
    assert issuer.verify(token, now=now)["sub"] == "alice"
    later = issuer.issue(subject="alice", access=ACCESS, expires_in=300, now=now + 120)
    with pytest.raises(ValueError, match="not valid yet"):
        issuer.verify(later, now=now)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "!!!.e30.e30", "e30.e30.e30", "W10.e30.e30"],
)
def test_malformed_tokens_are_value_errors(issuer: TokenIssuer, token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        issuer.verify(token)


def test_alg_none_is_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(subject="alice", access=ACCESS, expires_in=300)
    _, claims, _ = token.split(".")
    header = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"none"}').rstrip(b"=").decode()
    with pytest.raises(ValueError, match="algorithm"):
        issuer.verify(f"{header}.{claims}.")


def test_repr_shows_no_key_material(issuer: TokenIssuer) -> None:
    assert "PRIVATE" not in repr(issuer)
    assert repr(issuer).startswith("TokenIssuer(")
