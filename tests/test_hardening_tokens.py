"""Bad input from registries and token servers: a clear, bounded error, never a hang or a leak.

The caller of ``session.get`` through the middleware gets, for every way a
token server can misbehave, an :class:`aociauth.OCIAuthError` that is also an
:class:`aiohttp.ClientError`, names the registry and the step, carries the
token server's status where there was one, and holds neither the password
nor any token. Every call is wrapped in ``asyncio.wait_for``: a hang fails the
test instead of stalling the suite. (security.md T-T*, C4, C6, A3.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth.testing import RecordingServer, Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.leaks import PASSWORD, assert_clean, exception_texts
from aociauth.testing.scripted import ScriptedServer

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
    assert 1 <= tok.lifetime <= 86_400


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
