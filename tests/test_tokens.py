"""The token cache and token-response validation (pure code, no I/O)."""

from __future__ import annotations

import base64
import json
import math

import pytest

from aociauth import TokenResponseError, parse_scope, unlimited_scope
from aociauth.tokens import (
    DEFAULT_EXPIRES_IN,
    MAX_EXPIRES_IN,
    MAX_TOKEN_LENGTH,
    AccessToken,
    TokenCache,
    decode_jwt_segment,
    granted_scope,
    jwt_claims,
    parse_token_response,
)


def tok(scope: str, issued: float = 0.0, life: float = 100.0, value: str = "t") -> AccessToken:
    return AccessToken(value, parse_scope(scope), issued, issued + life)


# -- parse_token_response ----------------------------------------------------


def parse(obj: object) -> object:
    return parse_token_response(json.dumps(obj).encode(), registry="reg.example")


def test_token_preferred_to_access_token() -> None:
    r = parse_token_response(b'{"token": "a", "access_token": "b"}', registry="r")
    assert r.token == "a"
    assert parse_token_response(b'{"access_token": "b"}', registry="r").token == "b"
    assert parse_token_response(b'{"token": "", "access_token": "b"}', registry="r").token == "b"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT_EXPIRES_IN),
        (0, DEFAULT_EXPIRES_IN),
        (-5, DEFAULT_EXPIRES_IN),
        ("300", DEFAULT_EXPIRES_IN),
        (True, DEFAULT_EXPIRES_IN),
        (2, 2.0),
        (300, 300.0),
        (1e300, MAX_EXPIRES_IN),
        (10**400, MAX_EXPIRES_IN),
        (float("nan"), DEFAULT_EXPIRES_IN),
        (float("inf"), DEFAULT_EXPIRES_IN),
    ],
)
def test_expires_in_is_bounded(value: object, expected: float) -> None:
    body: dict[str, object] = {"token": "abc"}
    if value is not None:
        body["expires_in"] = value
    # json.dumps writes NaN and Infinity, which Python's json.loads accepts back.
    raw = json.dumps(body).encode()
    assert parse_token_response(raw, registry="r").expires_in == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>nope</html>",
        b"[]",
        b'"token"',
        b"{}",
        b'{"token": 5}',
        b'{"token": "a b"}',
        b'{"token": "a\\r\\nX-Injected: 1"}',
        b'{"token": "\\u00e9"}',
        b"\xff\xfe",
        json.dumps({"token": "a" * (MAX_TOKEN_LENGTH + 1)}).encode(),
        b'{"token": "ok", "refresh_token": "bad\\nvalue"}',
        b"[" * 100_000,
    ],
)
def test_unusable_answers_are_token_response_errors(body: bytes) -> None:
    with pytest.raises(TokenResponseError) as ei:
        parse_token_response(body, registry="reg.example")
    assert "reg.example" in str(ei.value)
    assert ei.value.step == "token"


def test_json_sent_as_text_is_accepted_and_bom_tolerated() -> None:
    assert parse_token_response(b'\xef\xbb\xbf{"token": "abc"}', registry="r").token == "abc"


def test_error_never_quotes_the_body() -> None:
    with pytest.raises(TokenResponseError) as ei:
        parse_token_response(b'{"token": "secret value with spaces"}', registry="r")
    assert "secret" not in str(ei.value)


def test_token_response_repr_hides_secrets() -> None:
    r = parse_token_response(
        b'{"token": "SECRETTOKEN", "refresh_token": "SECRETREFRESH"}', registry="r"
    )
    assert "SECRET" not in repr(r)


# -- AccessToken -----------------------------------------------------------


def test_access_token_repr_hides_value_and_usable_margin() -> None:
    t = tok("repository:a:pull", issued=0, life=10, value="SECRET")
    assert "SECRET" not in repr(t)
    assert t.usable(8.9)
    assert not t.usable(9.0)  # the original drops tokens expiring within a second


def test_refresh_due_in_last_fraction_only_for_finite_life() -> None:
    t = tok("repository:a:pull", issued=0, life=100)
    assert not t.refresh_due(84, 0.15)
    assert t.refresh_due(85, 0.15)
    forever = AccessToken("x", unlimited_scope(), -math.inf, math.inf)
    assert not forever.refresh_due(1e12, 0.15)


def test_narrowed_drops_refused_items() -> None:
    t = tok("repository:a:pull repository:b:pull")
    n = t.narrowed(parse_scope("repository:b:pull"))
    assert n is not None
    assert n.scope == parse_scope("repository:a:pull")
    assert n.value == t.value
    assert t.narrowed(parse_scope("repository:a:pull repository:b:pull")) is None


# -- TokenCache ------------------------------------------------------------


def test_lookup_by_contained_scope_and_partition() -> None:
    c = TokenCache()
    t = tok("repository:a:pull,push repository:b:pull")
    c.put("p1", t)
    assert c.get("p1", parse_scope("repository:a:pull"), 1) is t
    assert c.get("p1", parse_scope("repository:b:pull"), 1) is t
    assert c.get("p1", parse_scope("repository:b:push"), 1) is None
    assert c.get("p2", parse_scope("repository:a:pull"), 1) is None
    assert c.get("p1", parse_scope(""), 1) is t


def test_unlimited_token_holds_everything() -> None:
    c = TokenCache()
    t = AccessToken("x", unlimited_scope(), -math.inf, math.inf)
    c.put("p", t)
    assert c.get("p", parse_scope("repository:z:push registry:catalog:*"), 1) is t
    assert c.get("p", unlimited_scope(), 1) is t
    assert c.get("p", parse_scope(""), 1) is t


def test_expired_tokens_are_dropped_when_met() -> None:
    c = TokenCache()
    c.put("p", tok("repository:a:pull", issued=0, life=10))
    assert c.get("p", parse_scope("repository:a:pull"), 9.5) is None
    assert len(c) == 0


def test_a_token_drops_the_expired_tokens_of_its_resources() -> None:
    """An expired token behind a newer one in a bucket would never be met by a lookup
    (it stops at the newer), only by the bound: a new token drops those of its
    resources that had expired when it was issued."""
    c = TokenCache()
    a = tok("repository:a:pull", issued=0, life=10)
    b = tok("repository:b:pull", issued=0, life=10)
    c.put("p", a)
    c.put("p", b)
    c.put("q", tok("repository:a:pull", issued=0, life=10))
    # Issued while a is still usable: a stays (it may still serve, or be refused later).
    wide = tok("repository:a:pull repository:c:pull", issued=5, life=10)
    c.put("p", wide)
    assert len(c) == 4
    # Issued once a had expired: a goes; b (another resource) and q's token stay.
    later = tok("repository:a:pull", issued=10, life=10)
    c.put("p", later)
    assert len(c) == 4
    assert c.get("p", parse_scope("repository:a:pull"), 10) is later
    assert c.get("p", parse_scope("repository:c:pull"), 10) is wide


def test_bound_evicts_least_recently_used() -> None:
    c = TokenCache(max_entries=3)
    a, b, d = tok("repository:a:pull"), tok("repository:b:pull"), tok("repository:d:pull")
    for t in (a, b, d):
        c.put("p", t)
    assert c.get("p", parse_scope("repository:a:pull"), 1) is a  # a is now most recent
    e = tok("repository:e:pull")
    c.put("p", e)
    assert len(c) == 3
    assert c.get("p", parse_scope("repository:b:pull"), 1) is None  # b was least recent
    assert c.get("p", parse_scope("repository:a:pull"), 1) is a


def test_lookup_inspects_only_the_resource_bucket() -> None:
    """Lookup cost does not grow with unrelated tokens: count scope checks."""
    c = TokenCache(max_entries=200_000)
    for i in range(10_000):
        c.put("p", tok(f"repository:r{i}:pull"))
    checked = 0
    target = parse_scope("repository:r5000:pull")
    original_contains = type(target).contains

    def counting(self: object, other: object) -> bool:
        nonlocal checked
        checked += 1
        return original_contains(self, other)  # type: ignore[arg-type]

    type(target).contains = counting  # type: ignore[method-assign]
    try:
        assert c.get("p", target, 1) is not None
    finally:
        type(target).contains = original_contains  # type: ignore[method-assign]
    assert checked == 1


def test_discard_and_replace() -> None:
    c = TokenCache()
    t = tok("repository:a:pull repository:b:pull")
    c.put("p", t)
    n = t.narrowed(parse_scope("repository:b:pull"))
    c.replace("p", t, n)
    assert c.get("p", parse_scope("repository:b:pull"), 1) is None
    assert c.get("p", parse_scope("repository:a:pull"), 1) is n
    assert n is not None
    c.discard("p", n)
    assert len(c) == 0
    assert c.get("p", parse_scope(""), 1) is None


# -- granted_scope -----------------------------------------------------------


def jwt(claims: object) -> str:
    def part(obj: object) -> str:
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_granted_scope_reads_a_distribution_access_claim() -> None:
    token = jwt(
        {
            "access": [
                {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
                {"type": "registry", "name": "catalog", "actions": ["*"]},
            ]
        }
    )
    assert granted_scope(token) == parse_scope("repository:team/app:pull,push registry:catalog:*")
    assert granted_scope(jwt({"access": []})) == parse_scope("")


@pytest.mark.parametrize(
    "token",
    [
        "opaque-token",
        "a.b",
        "a..c",
        "a.!!!.c",
        jwt({"sub": "alice"}),
        jwt(["access"]),
        jwt({"access": "everything"}),
        jwt({"access": [{"type": "repository", "name": 5, "actions": ["pull"]}]}),
        jwt({"access": ["repository:x:pull"]}),
    ],
)
def test_granted_scope_is_unknown_for_anything_else(token: str) -> None:
    assert granted_scope(token) is None


# -- jwt_claims: the one reader of a token's claims --------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HEADER = b64url(b'{"alg":"ES256"}')
#: 25 bytes (3n + 1), so its base64url takes two '=' of padding.
PAYLOAD = b'{"sub": "alice", "n": 10}'
#: Its standard base64 has a '+' and a '/' where base64url has '-' and '_'.
ODD = b'{"sub": ">>>???"}'


@pytest.mark.parametrize(
    ("payload", "claims"),
    [
        (b64url(PAYLOAD), {"sub": "alice", "n": 10}),
        (b64url(ODD), {"sub": ">>>???"}),
        # Padding carries no byte: the right padding is taken, a wrong one is not.
        (b64url(PAYLOAD) + "==", {"sub": "alice", "n": 10}),
        (b64url(PAYLOAD) + "=", None),
        (b64url(PAYLOAD) + "===", None),
        (b64url(PAYLOAD)[:-1] + "=" + b64url(PAYLOAD)[-1], None),
        # base64url only: the standard alphabet's + and /, and whitespace, are refused.
        (base64.b64encode(ODD).decode().rstrip("="), None),
        (b64url(PAYLOAD)[:8] + " " + b64url(PAYLOAD)[8:], None),
        (b64url(PAYLOAD)[:-2], None),  # a length no encoding has (4n + 1)
        ("", None),
        ("!!!!", None),
        # The payload is UTF-8 JSON (RFC 7519 section 7.2) holding an object.
        (b64url(json.dumps({"sub": "alice"}).encode("utf-16")), None),
        (b64url(b"\xff{}"), None),
        (b64url(b"not json"), None),
        (b64url(b'["access"]'), None),
        (b64url(b'"a string"'), None),
        (b64url(b"null"), None),
        (b64url('{"sub": "é"}'.encode()), {"sub": "é"}),
    ],
)
def test_jwt_claims_reads_a_base64url_utf8_json_object_and_nothing_else(
    payload: str, claims: object
) -> None:
    assert "-" in b64url(ODD)
    assert "_" in b64url(ODD)
    assert jwt_claims(f"{HEADER}.{payload}.c2ln") == claims


@pytest.mark.parametrize(
    "token",
    [
        "opaque",
        f"{HEADER}.{b64url(PAYLOAD)}",
        f"{HEADER}.{b64url(PAYLOAD)}.c2ln.extra",
        f"{HEADER}.{b64url(PAYLOAD)}.c2ln.a.b",  # a JWE's five parts are not claims
        f"{HEADER}..c2ln",
    ],
)
def test_jwt_claims_wants_three_segments(token: str) -> None:
    assert jwt_claims(token) is None


def test_jwt_claims_reads_no_token_longer_than_a_server_may_send() -> None:
    access = [{"type": "repository", "name": "a", "actions": ["pull"]}]
    pad = "x" * (MAX_TOKEN_LENGTH * 3 // 4 - 200)  # base64 makes 4 characters of 3 bytes
    fits = f"{HEADER}.{b64url(json.dumps({'access': access, 'pad': pad}).encode())}.c2ln"
    assert len(fits) <= MAX_TOKEN_LENGTH
    assert jwt_claims(fits) is not None
    assert granted_scope(fits) == parse_scope("repository:a:pull")
    huge = f"{HEADER}.{b64url(json.dumps({'access': access, 'pad': pad * 2}).encode())}.c2ln"
    assert len(huge) > MAX_TOKEN_LENGTH
    assert jwt_claims(huge) is None
    assert granted_scope(huge) is None


def test_a_deeply_nested_payload_is_unreadable_not_a_crash() -> None:
    deep = b64url(b"[" * 10_000 + b"]" * 10_000)
    assert len(deep) < MAX_TOKEN_LENGTH
    assert jwt_claims(f"{HEADER}.{deep}.c2ln") is None


@pytest.mark.parametrize(
    ("segment", "decoded"),
    [
        ("", b""),
        ("YQ", b"a"),
        ("YQ==", b"a"),
        ("YWI", b"ab"),
        ("YWI=", b"ab"),
        ("-_8", b"\xfb\xff"),
    ],
)
def test_decode_jwt_segment_decodes_base64url(segment: str, decoded: bytes) -> None:
    assert decode_jwt_segment(segment) == decoded


@pytest.mark.parametrize("segment", ["YQ=", "YQ===", "Y", "+/8", "YQ =", "Y=Q=", "YWJj\n"])
def test_decode_jwt_segment_refuses_what_is_not_base64url(segment: str) -> None:
    with pytest.raises(ValueError, match="JWT segment"):
        decode_jwt_segment(segment)
