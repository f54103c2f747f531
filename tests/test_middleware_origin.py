"""Credentials are bound to the origin they are for, on every redirect hop.

aiohttp calls a client middleware again for each hop of a redirect, with a
fresh request, and strips only the headers the caller passed. These tests
drive real redirects between loopback servers reached by name
(``reg.test``, ``cdn.test``, ``evil.test``, all 127.0.0.1, see
``aociauth.testing.client.LoopbackResolver``), and assert on everything the server that
should get nothing recorded: headers, query, body.
(security.md T-D1..T-D8, A6, A7.)
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

import aociauth
from aociauth import ConfigEntry
from aociauth.testing import RecordingServer, Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.leaks import PASSWORD, assert_no_credentials
from aociauth.testing.scripted import ScriptedServer
from aociauth.testing.tls import TLSContexts

USER = "alice"

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0


@dataclass
class Stack:
    ts: TokenServer
    reg: Registry
    cdn: RecordingServer

    @property
    def reg_host(self) -> str:
        return f"reg.test:{self.reg.port}"

    def reg_url(self, path: str) -> str:
        return f"http://{self.reg_host}{path}"


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """A bearer registry on reg.test whose blobs redirect to a recording CDN on cdn.test."""
    async with (
        TokenServer(users={USER: PASSWORD}) as ts,
        Registry(auth="bearer", token_server=ts, realm=f"http://reg.test:{ts.port}/token") as reg,
        RecordingServer(blobs=reg.blobs) as cdn,
    ):
        yield Stack(ts, reg, cdn)


def config_for(host: str) -> aociauth.ConfigFile:
    return aociauth.ConfigFile.from_dict(
        {"auths": {host: {"username": USER, "password": PASSWORD}}}
    )


@pytest.mark.parametrize("cdn_host", ["cdn.test", "reg.test"])
async def test_blob_redirect_to_presigned_url_carries_no_credentials(
    stack: Stack, cdn_host: str
) -> None:
    # reg.test on another port is another origin too (aiohttp #12275, oras GHSA-vh4v).
    stack.reg.blob_redirect = f"http://{cdn_host}:{stack.cdn.port}/bucket"
    image = stack.reg.seed_image("team/app")
    digest = image.layer_digests[0]
    async with loopback_client(config_for(stack.reg_host)) as (mw, session):
        for _ in range(2):  # the second time a token is cached and sent ahead
            async with session.get(stack.reg_url(f"/v2/team/app/blobs/{digest}")) as r:
                assert r.status == 200
                assert await r.read() == stack.reg.blobs[digest]
    assert len(stack.cdn.requests) == 2
    assert all("X-Amz-Signature" in r.query for r in stack.cdn.requests)
    assert stack.cdn.credentials_seen() == []
    assert_no_credentials(stack.cdn.requests, where="the CDN")
    # The registry itself did get the token, and only one was fetched.
    assert stack.reg.counters.bearer == 2
    assert stack.ts.counters.get_basic == 1
    assert mw.stats.total_token_requests == 1


async def test_two_caller_authorization_headers_are_both_stripped_on_a_cross_origin_hop(
    stack: Stack,
) -> None:
    # aiohttp < 3.14.3 stripped only the first copy (aio-libs/aiohttp#13180).
    stack.reg.blob_redirect = f"http://cdn.test:{stack.cdn.port}/bucket"
    digest = stack.reg.seed_blob("team/app", b"layer")
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("Authorization", f"Basic {PASSWORD}")
    headers.add("Authorization", f"Bearer {PASSWORD}")
    async with (
        loopback_client(config_for(stack.reg_host)) as (_, session),
        session.get(stack.reg_url(f"/v2/team/app/blobs/{digest}"), headers=headers) as r,
    ):
        assert r.status == 200
    assert_no_credentials(stack.cdn.requests, where="the CDN")


def bearer_401(
    realm: str, scope: str = "repository:team/app:pull", service: str = "x"
) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="{realm}",service="{service}",scope="{scope}"'}


@pytest.mark.parametrize("challenge", ["basic", "bearer-own-realm", "bearer-registry-realm"])
async def test_401_from_an_origin_reached_by_redirect_gets_no_registry_credentials(
    stack: Stack, challenge: str
) -> None:
    """A registry redirects a manifest to evil.test, which answers 401 (ggcr #2337/#2349).

    Whatever evil.test asks for, the middleware treats it as a registry of its
    own, with its own (here: no) credentials: no Basic, no refresh token and
    no token issued for alice ever reaches it, and the token server never
    gets alice's password for a request to it.
    """
    evil = stack.cdn
    path = "/v2/team/app/manifests/latest"
    if challenge == "basic":
        evil.set_response(path, status=401, headers={"WWW-Authenticate": 'Basic realm="evil"'})
    elif challenge == "bearer-own-realm":
        own_realm = f"http://evil.test:{evil.port}/token"
        evil.set_response(path, status=401, headers=bearer_401(own_realm))
        evil.set_response("/token", body=json.dumps({"token": "evil-token"}))
    else:
        # The attacker names the real token server, hoping for a token made with alice's
        # password (a confused deputy).
        evil.set_response(
            path, status=401, headers=bearer_401(stack.reg.realm, service=stack.ts.service)
        )

    async def registry(req: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": f"http://evil.test:{evil.port}{path}"})

    async with (
        ScriptedServer(registry) as reg,
        loopback_client(config_for(f"reg.test:{reg.port}")) as (mw, session),
        session.get(reg.url_for(path, host="reg.test")) as r,
    ):
        final = r.status
    # Basic: evil's 401 comes back, unanswered. Bearer: a token fetched without
    # credentials, which evil refuses again (401 after a fresh token -> 403).
    assert final == (401 if challenge == "basic" else 403)
    assert mw.stats.requests >= 2
    assert evil.requests, "the redirect was not followed"
    for rec in evil.requests:
        auth = rec.authorization
        assert auth is None or auth == "Bearer evil-token" or _anonymous_jwt(auth), rec
        assert PASSWORD not in rec.body.decode("latin-1")
    assert all(r.username is None for r in stack.ts.requests), "alice's password was used"
    assert stack.ts.counters.get_basic == 0


def _anonymous_jwt(authorization: str) -> bool:
    """A token the real token server issued to nobody (what anyone may fetch)."""
    scheme, _, token = authorization.partition(" ")
    if scheme != "Bearer" or token.count(".") != 2:
        return False
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims.get("sub", "") == ""


async def test_upload_location_on_another_host_gets_no_credentials(stack: Stack) -> None:
    """POST .../blobs/uploads/ answers a Location on evil.test (oras GHSA-jxpm-75mh-9fp7)."""
    evil = stack.cdn
    evil.set_response("/upload/123", status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})

    async def registry(req: web.Request) -> web.StreamResponse:
        auth = req.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return web.Response(
            status=202, headers={"Location": f"http://evil.test:{evil.port}/upload/123?_state=s"}
        )

    async with ScriptedServer(registry) as reg:
        config = config_for(f"reg.test:{reg.port}")
        async with loopback_client(config) as (_, session):
            async with session.post(reg.url_for("/v2/team/app/blobs/uploads/", "reg.test")) as r:
                assert r.status == 202
                location = r.headers["Location"]
            async with session.put(location, data=b"layer bytes") as r:
                assert r.status == 401
            async with session.patch(location, data=b"layer bytes") as r:
                assert r.status == 401
    # The registry got Basic (proving there were credentials to leak) ...
    assert any(s.header("Authorization") for s in reg.requests)
    # ... and evil.test got none of them.
    assert [r.method for r in evil.requests] == ["PUT", "PATCH"]
    assert_no_credentials(evil.requests, where="the upload host")


async def test_same_origin_redirect_gets_credentials_again() -> None:
    # The other side of the binding: a hop that stays on the origin is authorised anew
    # (aiohttp copies the caller's headers per hop, not the middleware's).
    async def registry(req: web.Request) -> web.StreamResponse:
        if not req.headers.get("Authorization", "").startswith("Basic "):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        if req.path.startswith("/v2/team/app/"):
            return web.Response(status=307, headers={"Location": "/v2/team/other/blobs/d"})
        return web.Response(text="blob")

    async with ScriptedServer(registry) as reg:
        config = config_for(f"reg.test:{reg.port}")
        async with (
            loopback_client(config) as (_, session),
            session.get(reg.url_for("/v2/team/app/blobs/d", "reg.test")) as r,
        ):
            assert await r.text() == "blob"
    sent = [(s.path, bool(s.header("Authorization"))) for s in reg.requests]
    assert sent == [
        ("/v2/team/app/blobs/d", False),
        ("/v2/team/app/blobs/d", True),
        ("/v2/team/other/blobs/d", True),
    ]


async def test_redirect_loop_across_origins_stops_and_leaks_nothing(stack: Stack) -> None:
    evil = stack.cdn
    path = "/v2/team/app/manifests/latest"

    async def registry(req: web.Request) -> web.StreamResponse:
        if not req.headers.get("Authorization", "").startswith("Basic "):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return web.Response(status=302, headers={"Location": f"http://evil.test:{evil.port}{path}"})

    async with ScriptedServer(registry) as reg:
        evil.set_response(path, status=302, headers={"Location": reg.url_for(path, "reg.test")})
        config = config_for(f"reg.test:{reg.port}")
        async with loopback_client(config) as (_, session):
            with pytest.raises(aiohttp.TooManyRedirects):
                await asyncio.wait_for(
                    session.get(reg.url_for(path, "reg.test"), max_redirects=6), BOUND
                )
    assert len(evil.requests) == 3
    assert_no_credentials(evil.requests, where="the other origin")


# -- https -> http -------------------------------------------------------------


class AnyPortConfig:
    """alice's credentials for reg.test on every port.

    On a network, ``https://reg.test`` and ``http://reg.test`` share the config
    key ``reg.test`` (default ports). On loopback the two servers need two
    ports, so this config stands for that shared key.
    """

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        self.asked.append(host)
        if host.startswith("reg.test:"):
            return ConfigEntry(username=USER, password=PASSWORD)
        return ConfigEntry()


@pytest.mark.parametrize("challenge", ["basic", "bearer"])
async def test_https_to_http_downgrade_on_the_same_host_gets_no_credentials(
    tls: TLSContexts, challenge: str
) -> None:
    path = "/v2/team/app/manifests/latest"

    async def plain(req: web.Request) -> web.StreamResponse:
        if req.path == "/token":
            return web.json_response({"token": "anonymous-token"})
        if req.headers.get("Authorization"):
            return web.Response(text="ok")
        if challenge == "basic":
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="plain"'})
        realm = f"http://reg.test:{req.url.port}/token"
        return web.Response(status=401, headers=bearer_401(realm))

    async with ScriptedServer(plain) as http_side:

        async def secure(req: web.Request) -> web.StreamResponse:
            if not req.headers.get("Authorization", "").startswith("Basic "):
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="tls"'})
            return web.Response(
                status=302, headers={"Location": http_side.url_for(path, "reg.test")}
            )

        async with (
            ScriptedServer(secure, ssl_context=tls.server) as https_side,
            loopback_client(AnyPortConfig(), ssl_context=tls.client) as (_, session),
            session.get(https_side.url_for(path, "reg.test")) as r,
        ):
            body = await r.text()
            status = r.status
    # The https registry did get alice's Basic credentials ...
    assert any(s.header("Authorization") for s in https_side.requests)
    # ... the plain http side of the same host got nothing, not even on its own 401.
    if challenge == "basic":
        assert status == 401
        assert_no_credentials(http_side.requests, where="the plain-http origin")
    else:
        # It may have a token fetched without credentials: that is not alice's.
        assert (status, body) == (200, "ok")
        assert [(s.path, s.header("Authorization")) for s in http_side.requests] == [
            ("/v2/team/app/manifests/latest", []),
            ("/token", []),
            ("/v2/team/app/manifests/latest", ["Bearer anonymous-token"]),
        ]
        assert all(PASSWORD not in s.text() for s in http_side.requests)


async def test_plain_http_registry_contacted_first_does_get_its_credentials(
    tls: TLSContexts,
) -> None:
    """The control for the downgrade test: the same config does answer for the http port.

    So what kept the credentials off plain http above was the downgrade rule,
    not the config.
    """

    async def plain(req: web.Request) -> web.StreamResponse:
        if req.headers.get("Authorization", "").startswith("Basic "):
            return web.Response(text="ok")
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="plain"'})

    async with (
        ScriptedServer(plain) as http_side,
        loopback_client(AnyPortConfig(), ssl_context=tls.client) as (_, session),
        session.get(http_side.url_for("/v2/team/app/manifests/latest", "reg.test")) as r,
    ):
        assert r.status == 200
    assert len(http_side.requests[1].header("Authorization")) == 1
