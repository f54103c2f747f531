"""Issue 10 through the real middleware: what holds once TokenSessions and redirect_target
are wired in.

Each test reproduced a defect end to end against AuthMiddleware before the
wiring that closes it. Names resolve through a table to 127.0.0.1: the user's session through
its own connector, the middleware's token session through
``aociauth._resolver.DefaultResolver``, replaced here.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

import aociauth
from aociauth import ConfigEntry
from aociauth import _resolver as resolver_module

NAMES = {"token.test", "public.test", "other.test"}
MANIFEST = "/v2/a/manifests/x"


class TableResolver(AbstractResolver):
    """Every test name is 127.0.0.1, as a rebinding attacker's names would be."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in NAMES:
            raise OSError(f"no such test name {host}")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


class Anonymous:
    async def entry_for_registry(self, host: str) -> ConfigEntry:
        return ConfigEntry()


class Token:
    """A token endpoint that counts requests, records Cookie headers and sets a cookie."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("Cookie")))
        resp = web.json_response({"token": "tok", "expires_in": 300})
        resp.set_cookie("tracker", "from-the-first-realm", path="/")
        return resp


async def _serve(handler: object) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def _registry(realm: str) -> object:
    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer tok":
            return web.Response(
                status=401,
                headers={"Www-Authenticate": f'Bearer realm="{realm}",scope="repository:a:pull"'},
            )
        return web.Response(text="ok")

    return handle


@pytest.fixture
def table_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolver_module, "DefaultResolver", TableResolver)


@pytest.fixture
async def token() -> AsyncIterator[tuple[Token, TestServer]]:
    t = Token()
    server = await _serve(t.handle)
    yield t, server
    await server.close()


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def test_a_pooled_token_connection_does_not_carry_a_public_registrys_request(
    table_dns: None, token: tuple[Token, TestServer]
) -> None:
    """A registry on this machine (127.0.0.1) and a public one (public.test) both name
    the realm http://token.test:P/token, which resolves to loopback. The first may
    use it; the second's token request must be refused, pooled connection or not."""
    t, token_server = token
    realm = f"http://token.test:{token_server.port}/token"
    local = await _serve(_registry(realm))
    public = await _serve(_registry(realm))
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=Anonymous()))
    connector = aiohttp.TCPConnector(resolver=TableResolver())
    try:
        async with aiohttp.ClientSession(connector=connector, middlewares=[mw]) as session:
            assert await _get(session, f"http://127.0.0.1:{local.port}{MANIFEST}") == 200
            assert len(t.seen) == 1
            with pytest.raises(aociauth.RealmPolicyError):
                await asyncio.wait_for(
                    _get(session, f"http://public.test:{public.port}{MANIFEST}"), 10
                )
        assert len(t.seen) == 1
    finally:
        await mw.close()
        await local.close()
        await public.close()


async def test_a_token_servers_cookie_never_reaches_another_realm(
    table_dns: None, token: tuple[Token, TestServer]
) -> None:
    t, token_server = token
    first = await _serve(_registry(f"http://token.test:{token_server.port}/realm-a/token"))
    second = await _serve(_registry(f"http://token.test:{token_server.port}/realm-b/token"))
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=Anonymous()))
    try:
        async with aiohttp.ClientSession(middlewares=[mw]) as session:
            assert await _get(session, f"http://127.0.0.1:{first.port}{MANIFEST}") == 200
            assert await _get(session, f"http://127.0.0.1:{second.port}{MANIFEST}") == 200
        assert [path for path, _ in t.seen] == ["/realm-a/token", "/realm-b/token"]
        assert [cookie for _, cookie in t.seen] == [None, None]
    finally:
        await mw.close()
        await first.close()
        await second.close()


async def test_an_unreadable_location_ends_in_a_client_error() -> None:
    async def redirect(request: web.Request) -> web.Response:
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
        await registry.close()


async def test_a_cross_origin_redirect_targets_query_never_reaches_an_error() -> None:
    """A registry redirects a blob to a CDN whose signature parameters are on no list
    (``verify``, Akamai's ``hdnts``); the CDN fails, the caller raises for status."""

    async def cdn(request: web.Request) -> web.Response:
        return web.Response(status=500)

    cdn_server = await _serve(cdn)
    signed = f"http://cdn.test:{cdn_server.port}/b?verify=Zq-CDN-SIG-1&hdnts=exp~hmac=Zq-CDN-SIG-2"

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": signed})

    registry = await _serve(redirect)
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=Anonymous()))
    connector = aiohttp.TCPConnector(resolver=TableResolver())
    NAMES.add("cdn.test")
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
        NAMES.discard("cdn.test")
        await mw.close()
        await registry.close()
        await cdn_server.close()
