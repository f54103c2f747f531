"""Issue 10 through the real middleware: what holds once TokenSessions and redirect_target
are wired in.

Each test reproduced a defect end to end against AuthMiddleware before the
wiring that closes it. Names resolve through a table to 127.0.0.1: the user's session through
its own connector, the middleware's token session through
``aociauth._resolver.DefaultResolver``, replaced here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth import ConfigEntry
from aociauth import _resolver as resolver_module
from aociauth.testing.client import TableResolver
from aociauth.testing.scripted import Handler, ScriptedServer

TABLE = {name: "127.0.0.1" for name in ("token.test", "public.test", "other.test")}
MANIFEST = "/v2/a/manifests/x"


class Anonymous:
    async def entry_for_registry(self, host: str) -> ConfigEntry:
        return ConfigEntry()


async def token_handler(request: web.Request) -> web.StreamResponse:
    """A token endpoint that sets a cookie (the server records each request's Cookie)."""
    resp = web.json_response({"token": "tok", "expires_in": 300})
    resp.set_cookie("tracker", "from-the-first-realm", path="/")
    return resp


async def _serve(handler: Handler) -> ScriptedServer:
    server = ScriptedServer(handler)
    await server.start()
    return server


def _registry(realm: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer tok":
            return web.Response(
                status=401,
                headers={"Www-Authenticate": f'Bearer realm="{realm}",scope="repository:a:pull"'},
            )
        return web.Response(text="ok")

    return handle


@pytest.fixture
def table_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolver_module, "DefaultResolver", lambda: TableResolver(TABLE))


@pytest.fixture
async def token() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer(token_handler) as server:
        yield server


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def test_a_pooled_token_connection_does_not_carry_a_public_registrys_request(
    table_dns: None, token: ScriptedServer
) -> None:
    """A registry on this machine (127.0.0.1) and a public one (public.test) both name
    the realm http://token.test:P/token, which resolves to loopback. The first may
    use it; the second's token request must be refused, pooled connection or not."""
    token_server = token
    realm = f"http://token.test:{token_server.port}/token"
    local = await _serve(_registry(realm))
    public = await _serve(_registry(realm))
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=Anonymous()))
    connector = aiohttp.TCPConnector(resolver=TableResolver(TABLE))
    try:
        async with aiohttp.ClientSession(connector=connector, middlewares=[mw]) as session:
            assert await _get(session, f"http://127.0.0.1:{local.port}{MANIFEST}") == 200
            assert len(token_server.requests) == 1
            with pytest.raises(aociauth.RealmPolicyError):
                await asyncio.wait_for(
                    _get(session, f"http://public.test:{public.port}{MANIFEST}"), 10
                )
        assert len(token_server.requests) == 1
    finally:
        await mw.close()
        await local.stop()
        await public.stop()


async def test_a_token_servers_cookie_never_reaches_another_realm(
    table_dns: None, token: ScriptedServer
) -> None:
    token_server = token
    first = await _serve(_registry(f"http://token.test:{token_server.port}/realm-a/token"))
    second = await _serve(_registry(f"http://token.test:{token_server.port}/realm-b/token"))
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=Anonymous()))
    try:
        async with aiohttp.ClientSession(middlewares=[mw]) as session:
            assert await _get(session, f"http://127.0.0.1:{first.port}{MANIFEST}") == 200
            assert await _get(session, f"http://127.0.0.1:{second.port}{MANIFEST}") == 200
        assert [e.path for e in token_server.requests] == ["/realm-a/token", "/realm-b/token"]
        assert [e.headers.get("Cookie") for e in token_server.requests] == [None, None]
    finally:
        await mw.close()
        await first.stop()
        await second.stop()


async def test_an_unreadable_location_ends_in_a_client_error() -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "http://[]@"})

    registry = await _serve(redirect)
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=Anonymous()))
    try:
        async with aiohttp.ClientSession(middlewares=[mw]) as session:
            blob = f"http://127.0.0.1:{registry.port}/v2/a/blobs/sha256:{'0' * 64}"
            with pytest.raises(aiohttp.ClientError):
                await _get(session, blob)
    finally:
        await mw.close()
        await registry.stop()


async def test_a_cross_origin_redirect_targets_query_never_reaches_an_error() -> None:
    """A registry redirects a blob to a CDN whose signature parameters are on no list
    (``verify``, Akamai's ``hdnts``); the CDN fails, the caller raises for status."""

    async def cdn(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500)

    cdn_server = await _serve(cdn)
    signed = f"http://cdn.test:{cdn_server.port}/b?verify=Zq-CDN-SIG-1&hdnts=exp~hmac=Zq-CDN-SIG-2"

    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": signed})

    registry = await _serve(redirect)
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=Anonymous()))
    connector = aiohttp.TCPConnector(resolver=TableResolver({**TABLE, "cdn.test": "127.0.0.1"}))
    try:
        async with aiohttp.ClientSession(connector=connector, middlewares=[mw]) as session:
            blob = f"http://127.0.0.1:{registry.port}/v2/a/blobs/sha256:{'0' * 64}"
            async with session.get(blob) as resp:
                with pytest.raises(aiohttp.ClientResponseError) as ei:
                    resp.raise_for_status()
                history = " ".join(repr(h.headers) for h in resp.history)
        shown = f"{ei.value} {ei.value!r} {history}"
        assert ei.value.status == 500
        assert "verify=" in shown  # the keys stay, to debug with
        assert "Zq-CDN-SIG" not in shown
    finally:
        await mw.close()
        await registry.stop()
        await cdn_server.stop()
