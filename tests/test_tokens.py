"""aociauth.tokens: the token cache and the reading of token-server answers.

First the pure code (no I/O); then every way a token server can answer badly,
through the middleware against loopback servers (a clear, bounded error that
leaks nothing); then property-based fuzzing of the parsers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aociauth
from aociauth import TokenResponseError, parse_scope, unlimited_scope
from aociauth.testing import RecordingServer, Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.leaks import PASSWORD, assert_clean, exception_texts
from aociauth.testing.scripted import ScriptedServer
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


# -- bad token server answers, through the middleware ---------------------------------------------
# Bad input from registries and token servers: a clear, bounded error, never a hang or a leak.
#
# The caller of ``session.get`` through the middleware gets, for every way a
# token server can misbehave, an :class:`aociauth.OCIAuthError` that is also an
# :class:`aiohttp.ClientError`, names the registry and the step, carries the
# token server's status where there was one, and holds neither the password
# nor any token. Every call is wrapped in ``asyncio.wait_for``: a hang fails the
# test instead of stalling the suite. (security.md T-T*, C4, C6, A3.)


USER = "alice"
FAST = {"token_timeout": 0.3, "retry_backoff": 0.01, "retry_max_wait": 0.05}

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0


@dataclass
class Stack:
    ts: TokenServer
    reg: Registry
    digest: str

    @property
    def host(self) -> str:
        return self.reg.host

    @property
    def blob_url(self) -> str:
        return f"{self.reg.url}/v2/team/app/blobs/{self.digest}"


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with (
        TokenServer(users={USER: PASSWORD}) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
    ):
        digest = reg.seed_blob("team/app", b"layer bytes")
        yield Stack(ts, reg, digest)


def config(stack: Stack) -> aociauth.ConfigFile:
    return aociauth.ConfigFile.from_dict(
        {"auths": {stack.host: {"username": USER, "password": PASSWORD}}}
    )


async def fetch(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        await r.read()
        return r.status


async def failure(stack: Stack, **params: Any) -> aociauth.OCIAuthError:
    """Pull the blob once; return the error it must end in."""
    return (await failure_and_stats(stack, **params))[0]


async def failure_and_stats(
    stack: Stack, **params: Any
) -> tuple[aociauth.OCIAuthError, aociauth.AuthStats]:
    async with loopback_client(config(stack), **{**FAST, **params}) as (mw, session):
        with pytest.raises(aociauth.OCIAuthError) as ei:
            await asyncio.wait_for(fetch(session, stack.blob_url), BOUND)
    return ei.value, mw.stats


def assert_well_formed(exc: aociauth.OCIAuthError, stack: Stack, status: int | None) -> None:
    assert isinstance(exc, aiohttp.ClientError)
    assert isinstance(exc, aociauth.TokenServerError)
    assert exc.registry == stack.host
    assert exc.step == "token"
    assert stack.host in str(exc)
    assert exc.status == status
    text = exception_texts(exc)
    assert_clean(text)
    assert "eyJ" not in text, "a JWT (the token server's) is in the error"


# Bad answers that are not worth retrying: one token request, then the error.
@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("html", 200),
        ("empty", 200),
        ("not_json", 200),
        ("json_array", 200),
        ("no_token", 200),
        ("bad_token_chars", 200),  # CR, LF and spaces: header injection
        ("huge", 200),  # 50 MB announced in Content-Length
        ("redirect", 302),
    ],
)
async def test_bad_token_answer_is_a_clear_error(stack: Stack, kind: str, status: int) -> None:
    stack.ts.respond_with(kind)
    exc = await failure(stack)
    assert_well_formed(exc, stack, status)
    assert stack.ts.counters.requests == 1
    # Nothing was sent to the registry with a token, let alone an injected header.
    assert stack.reg.counters.bearer == 0


# Failures that may pass: retried, then the error of the last attempt. A stalled
# body is a timeout after the 200 came: the status is that 200.
@pytest.mark.parametrize(
    ("kind", "status"),
    [("drop", None), ("slow_body", 200), ("500", 500), ("503", 503), ("429", 429)],
)
async def test_token_server_failure_is_retried_then_a_clear_error(
    stack: Stack, kind: str, status: int | None
) -> None:
    if kind.isdigit():
        # Retry-After far beyond retry_max_wait: the cap, not the header, decides.
        stack.ts.fail_next(3, status=int(kind), retry_after=3600)
    else:
        stack.ts.respond_with(kind, 6)
    exc, stats = await failure_and_stats(stack, token_attempts=3)
    assert_well_formed(exc, stack, status)
    assert stats.total_token_requests == 3
    if kind == "drop":
        # aiohttp itself sends an idempotent request once more on a dropped
        # connection (RFC 9112 9.3.1): up to two arrivals per attempt.
        assert 3 <= stack.ts.counters.requests <= 6
    else:
        assert stack.ts.counters.requests == 3
    assert stack.reg.counters.bearer == 0


@pytest.mark.parametrize("kind", ["drop", "slow_body", "503"])
async def test_one_transient_failure_costs_one_more_token_request(stack: Stack, kind: str) -> None:
    if kind.isdigit():
        stack.ts.fail_next(1, status=int(kind))
    else:
        stack.ts.respond_with(kind)
    async with loopback_client(config(stack), **FAST) as (mw, session):
        assert await asyncio.wait_for(fetch(session, stack.blob_url), BOUND) == 200
    assert stack.ts.counters.requests == 2
    if kind == "drop":
        # aiohttp's own resend of an idempotent request absorbed it (RFC 9112 9.3.1).
        assert mw.stats.total_token_requests == 1
    else:
        assert mw.stats.total_token_requests == 2
        assert mw.stats.token_server_retries == 1


async def test_token_redirect_is_not_followed(stack: Stack) -> None:
    """A 302 from the token endpoint is an error; its target never hears of us (T-R11/12)."""
    async with RecordingServer() as target:
        stack.ts.respond_with("redirect", location=f"{target.url}/latest/meta-data/")
        exc = await failure(stack)
        assert exc.status == 302
        assert target.requests == []
    stack.ts.respond_with("redirect")  # to the token server's own /token-redirected
    exc = await failure(stack)
    assert exc.status == 302
    assert stack.ts.counters.redirects_followed == 0


async def test_chunked_50mb_body_is_cut_at_max_token_response() -> None:
    """No Content-Length to refuse up front: the read stops once past the cap.

    The server counts what it managed to write before the client hung up.
    What it wrote beyond what the client read sits in socket buffers; either
    way it is a small part of the 50 MB.
    """
    cap = 64 * 1024
    total = 50 * 1024 * 1024
    written = 0
    finished = False

    async def tokens(req: web.Request) -> web.StreamResponse:
        nonlocal written, finished
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(req)
        chunk = b'{"token":"' + b"a" * (64 * 1024 - 10)
        try:
            while written < total:
                await resp.write(chunk)
                written += len(chunk)
                chunk = b"a" * (64 * 1024)
            finished = True
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    async with ScriptedServer(tokens) as ts:

        async def registry(req: web.Request) -> web.StreamResponse:
            challenge = (
                f'Bearer realm="{ts.url_for("/token")}",service="s",scope="repository:a:pull"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})

        async with (
            ScriptedServer(registry) as reg,
            loopback_client(None, max_token_response=cap, **FAST) as (
                _,
                session,
            ),
        ):
            with pytest.raises(aociauth.TokenServerError) as ei:
                await asyncio.wait_for(fetch(session, reg.url_for("/v2/a/manifests/x")), BOUND)
    assert f"larger than {cap} bytes" in str(ei.value)
    assert ei.value.status == 200
    assert not finished
    print(f"\nchunked token body: server wrote {written} of {total} bytes before the hang-up")
    assert written < total // 4


# -- challenges that cannot be used ------------------------------------------------


@pytest.mark.parametrize(
    ("challenge", "outcome"),
    [
        ('Bearer realm="http://127.0.0.1:9/token', 401),  # unterminated quote
        ('Bearer realm="http://127.0.0.1:9/token\\', 401),  # trailing backslash
        ('Bearer realm="http://127.0.0.1:9/a",realm="http://127.0.0.1:9/b"', 401),
        ('Bearer realm=""', "challenge"),
        ("Bearer", "challenge"),
        ('Bearer service="reg",scope="repository:a:pull"', "challenge"),
        ("Negotiate abc", 401),
        ("!!garbage ((( ,,, =", 401),
        ("Basic realm=" + "x" * 4000, 401),  # Basic, and no credentials to send
    ],
)
async def test_unusable_challenge_returns_the_401_or_a_challenge_error(
    challenge: str, outcome: int | str
) -> None:
    """Nothing is sent anywhere on an unusable challenge: no token request, no retry."""

    async def registry(req: web.Request) -> web.StreamResponse:
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async with ScriptedServer(registry) as reg, loopback_client(None, **FAST) as (mw, session):
        url = reg.url_for("/v2/a/manifests/x")
        if isinstance(outcome, int):
            assert await asyncio.wait_for(fetch(session, url), BOUND) == outcome
        else:
            with pytest.raises(aociauth.ChallengeError) as ei:
                await asyncio.wait_for(fetch(session, url), BOUND)
            assert isinstance(ei.value, aiohttp.ClientError)
            assert ei.value.step == outcome
            assert ei.value.registry == f"127.0.0.1:{reg.port}"
    assert len(reg.requests) == 1
    assert mw.stats.total_token_requests == 0


# -- expires_in --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_expires_in",
    [
        "1e400",  # inf once parsed
        "-1e400",
        "NaN",
        "Infinity",
        "1" + "0" * 400,  # an integer float() cannot hold
        "-5",
        "0",
        "true",
        "null",
        '"300"',
        '"soon"',
        "[]",
        "{}",
        "1e300",
    ],
)
async def test_absurd_expires_in_never_crashes_and_gives_a_lasting_token(
    raw_expires_in: str,
) -> None:
    """The token is accepted and lives a sane time: the second pull needs no token request."""
    token_requests = 0

    async def tokens(req: web.Request) -> web.StreamResponse:
        nonlocal token_requests
        token_requests += 1
        body = f'{{"token": "tok-{token_requests}", "expires_in": {raw_expires_in}}}'
        return web.Response(body=body.encode(), content_type="application/json")

    async def registry(req: web.Request) -> web.StreamResponse:
        if req.headers.get("Authorization", "").startswith("Bearer tok-"):
            return web.Response(text="ok")
        challenge = f'Bearer realm="{ts.url_for("/token")}",service="s",scope="repository:a:pull"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async with (
        ScriptedServer(tokens) as ts,
        ScriptedServer(registry) as reg,
        loopback_client(None, **FAST) as (mw, session),
    ):
        for _ in range(3):
            assert (
                await asyncio.wait_for(fetch(session, reg.url_for("/v2/a/manifests/x")), BOUND)
                == 200
            )
        tok = mw.cached_token(reg.url_for(""), aociauth.parse_scope("repository:a:pull"))
    assert token_requests == 1
    assert tok is not None
    # At most the cap: lifetime is expires_at - issued_at, floats on the monotonic clock,
    # and that subtraction may round a capped day to 86400.00000000001.
    assert 1 <= tok.lifetime <= MAX_EXPIRES_IN * (1 + 1e-9)


async def test_5000_digit_expires_in_is_an_error_not_a_crash() -> None:
    """Python refuses to parse integers of more than 4300 digits: the answer is unusable,
    and that is a TokenResponseError like any other unreadable body."""

    async def tokens(req: web.Request) -> web.StreamResponse:
        body = '{"token": "tok", "expires_in": %s}' % ("9" * 5000)
        return web.Response(body=body.encode(), content_type="application/json")

    async def registry(req: web.Request) -> web.StreamResponse:
        challenge = f'Bearer realm="{ts.url_for("/token")}",service="s",scope="repository:a:pull"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async with (
        ScriptedServer(tokens) as ts,
        ScriptedServer(registry) as reg,
        loopback_client(None, **FAST) as (_, session),
    ):
        with pytest.raises(aociauth.TokenResponseError) as ei:
            await asyncio.wait_for(fetch(session, reg.url_for("/v2/a/manifests/x")), BOUND)
    assert ei.value.status == 200
    assert "9999" not in str(ei.value)


async def test_token_server_error_body_is_not_repeated(stack: Stack) -> None:
    """A 401 whose body holds a refresh token (T-T13): neither the body nor the token shows."""
    body = json.dumps(
        {"errors": [{"code": "UNAUTHORIZED", "message": "no", "detail": {"rt": PASSWORD}}]}
    )
    stack.ts.fail_next(2, status=401, body=body)
    exc = await failure(stack)
    assert_well_formed(exc, stack, 401)
    assert "UNAUTHORIZED" not in str(exc)


async def test_a_refused_refresh_token_costs_at_most_two_requests_and_is_not_cached(
    stack: Stack,
) -> None:
    """The token server does not know the identity token (T-T12): the refresh grant is
    refused (401) and the caller gets that 401; nothing loops, nothing falls back to a
    Basic GET it has no credentials for, and the next pull asks again."""
    config = aociauth.ConfigFile.from_dict(
        {"auths": {stack.host: {"identitytoken": "unknown-refresh-token"}}}
    )
    pulls = 3
    async with loopback_client(config, **FAST) as (_, session):
        for _ in range(pulls):
            with pytest.raises(aociauth.TokenServerError) as ei:
                await asyncio.wait_for(fetch(session, stack.blob_url), BOUND)
            assert ei.value.status == 401
    kinds = [r.kind for r in stack.ts.requests]
    assert set(kinds) == {"post_refresh"}
    # One grant per pull, two when a refused early fetch lets the registry's 401 decide.
    assert pulls <= len(kinds) <= 2 * pulls
    assert stack.reg.counters.bearer == 0


# -- fuzzing the token parsers --------------------------------------------------------------------
# Property-based fuzzing of the token parsers, which read hostile input: only our errors escape.
#
# * :func:`aociauth.tokens.parse_token_response` reads whatever a token server
#   sends: it returns a valid token or raises :class:`TokenResponseError`, whose
#   message never quotes the body.
# * :func:`aociauth.tokens.granted_scope` reads a token's own claims to learn
#   what it grants: any token gives a scope or "unknown", never an exception,
#   and never more than the claims list.


MARK = "ZQ9SECRET"
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

secret_st = st.text(alphabet="abcdefghijklmnop0123456789", min_size=4, max_size=10).map(
    lambda s: MARK + s
)
token_like = st.one_of(
    secret_st,
    st.from_regex(r"[A-Za-z0-9\-._~+/]{1,40}={0,2}", fullmatch=True),
    st.text(max_size=20),  # anything, CR, LF and spaces included
    st.just("a" * (MAX_TOKEN_LENGTH + 1)),
    st.just(""),
)
number = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**320),
    st.floats(),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1e-999"]).map(json.loads),
)
leaf = st.none() | st.booleans() | number | st.text(max_size=10) | token_like
json_value = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def token_documents(draw: st.DrawFn) -> dict[str, object]:
    doc: dict[str, object] = {}
    for name in ("token", "access_token", "refresh_token", "expires_in", "issued_at", "scope"):
        if draw(st.booleans()):
            doc[name] = draw(token_like if "token" in name else json_value)
    doc.update(draw(st.dictionaries(st.text(max_size=8), json_value, max_size=2)))
    return doc


def encode(doc: object, how: str) -> bytes:
    text = json.dumps(doc)
    if how == "utf-8-sig":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "truncated":
        return text.encode()[: len(text) // 2]
    if how == "nested":
        return b"[" * 50_000 + text.encode()
    return text.encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.binary(max_size=200),
    st.tuples(
        token_documents() | json_value,
        st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "truncated", "nested"]),
    ).map(lambda t: encode(*t)),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_any_token_answer_gives_a_valid_token_or_a_token_response_error(body: bytes) -> None:
    try:
        resp = parse_token_response(body, registry="reg.example")
    except TokenResponseError as exc:
        error: TokenResponseError | None = exc
    else:
        error = None
    if error is not None:
        message = str(error) + repr(error)
        assert "reg.example" in message
        assert MARK not in message, "the error quotes the body"
        assert error.status == 200
        return
    assert isinstance(resp.token, str)
    assert 0 < len(resp.token) <= MAX_TOKEN_LENGTH
    assert B64TOKEN.fullmatch(resp.token)
    assert isinstance(resp.refresh_token, str)
    assert not any(c in resp.refresh_token for c in " \r\n\t")
    assert isinstance(resp.expires_in, float)
    assert math.isfinite(resp.expires_in)
    assert 0 < resp.expires_in <= MAX_EXPIRES_IN
    assert MARK not in repr(resp)


@settings(max_examples=300, deadline=None)
@given(doc=token_documents())
def test_token_is_preferred_when_both_are_usable(doc: dict[str, object]) -> None:
    try:
        resp = parse_token_response(json.dumps(doc).encode(), registry="r")
    except TokenResponseError:
        return
    token = doc.get("token")
    if isinstance(token, str) and B64TOKEN.fullmatch(token) and len(token) <= MAX_TOKEN_LENGTH:
        assert resp.token == token
    else:
        assert resp.token == doc.get("access_token")


# -- a token's own claims ---------------------------------------------------------------------

actions_st = st.sampled_from(["pull", "push", "*", ""]) | json_value
valid_entry = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["repository", "registry"]) | st.text(max_size=5),
        "name": st.text(max_size=12),
        "actions": st.lists(actions_st, max_size=4),
    }
)
access_entry = st.one_of(*[valid_entry] * 6, json_value)
good_claims = st.fixed_dictionaries(
    {"access": st.one_of(*[st.lists(access_entry, max_size=4)] * 3, json_value)},
    optional={"sub": st.text(max_size=5), "exp": number},
)
claims_st = st.one_of(good_claims, good_claims, good_claims, json_value)


@st.composite
def jwt_like(draw: st.DrawFn) -> tuple[str, object]:
    claims = draw(claims_st)
    payload = json.dumps(claims).encode()
    how = draw(st.sampled_from(["plain"] * 4 + ["padded", "garbage", "utf-16", "parts"]))
    if how == "padded":
        middle = base64.urlsafe_b64encode(payload).decode()
    elif how == "garbage":
        middle = draw(st.from_regex(r"[A-Za-z0-9\-._~+/]{0,30}={0,2}", fullmatch=True))
    elif how == "utf-16":
        middle = b64url(json.dumps(claims).encode("utf-16"))
    else:
        middle = b64url(payload)
    parts = ["eyJhbGciOiJFUzI1NiJ9", middle, "c2ln"]
    if how == "parts":
        parts = parts[: draw(st.integers(0, 2))] + draw(st.lists(st.just("x"), max_size=2))
    return ".".join(parts), claims


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=jwt_like())
def test_a_tokens_claims_are_read_without_raising_and_never_widened(
    token: tuple[str, object],
) -> None:
    """What a token says it grants is read from hostile input: any token gives a Scope or
    None (unknown), and the Scope holds nothing the claims do not list."""
    value, claims = token
    granted = granted_scope(value)
    if granted is None:
        return
    assert isinstance(granted, aociauth.Scope)
    assert isinstance(claims, dict)
    listed = {
        (e.get("type"), e.get("name"), a)
        for e in claims["access"]
        if isinstance(e, dict) and isinstance(e.get("actions"), list)
        for a in e["actions"]
        if isinstance(a, str)
    }
    for rs in granted:
        assert (rs.resource_type, rs.resource, rs.action) in listed


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
