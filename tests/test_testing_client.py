"""The client side of the toolkit: names on loopback, tables instead of DNS, sessions through
the middleware."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth.testing import LoopbackResolver, Reply, ScriptedServer, TableResolver
from aociauth.testing.client import loopback_client
from aociauth.testing.pytest_plugin import ClientFactory
from aociauth.testing.tls import TLSContexts


async def test_loopback_resolver_sends_every_name_to_127_0_0_1() -> None:
    resolver = LoopbackResolver()
    for name in ("reg.test", "localhost", "ghcr.io"):
        (answer,) = await resolver.resolve(name, 443)
        assert (answer["hostname"], answer["host"], answer["port"]) == (name, "127.0.0.1", 443)
        assert answer["family"] == socket.AF_INET
    assert resolver.asked == ["reg.test", "localhost", "ghcr.io"]


async def test_table_resolver_answers_its_table_and_nothing_else() -> None:
    resolver = TableResolver({"one.test": "10.0.0.1", "two.test": ["::1", "127.0.0.2"]})
    assert [a["host"] for a in await resolver.resolve("one.test", 80)] == ["10.0.0.1"]
    answers = await resolver.resolve("two.test", 80)
    assert [(a["host"], a["family"]) for a in answers] == [
        ("::1", socket.AF_INET6),
        ("127.0.0.2", socket.AF_INET),
    ]
    with pytest.raises(OSError, match=r"no such test name other\.test"):
        await resolver.resolve("other.test", 80)
    assert resolver.asked == ["one.test", "two.test", "other.test"]


async def registry(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization", "").startswith("Basic "):
        return web.Response(text="ok")
    return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})


async def test_loopback_client_reaches_a_name_through_the_middleware() -> None:
    async with ScriptedServer(registry) as reg:
        host = f"reg.test:{reg.port}"
        config = aociauth.ConfigFile.from_dict(
            {"auths": {host: {"username": "alice", "password": "pw"}}}
        )
        async with loopback_client(config) as (mw, session):
            async with session.get(reg.url_for("/v2/", host="reg.test")) as resp:
                assert resp.status == 200
            assert mw.stats.responses_401 == 1
        assert session.closed
    assert [e.host for e in reg.requests] == ["reg.test", "reg.test"]
    assert [bool(e.header("Authorization")) for e in reg.requests] == [False, True]


async def test_loopback_client_trusts_the_given_ca(tls: TLSContexts) -> None:
    async with ScriptedServer([Reply(200)], ssl_context=tls.server) as reg:
        async with (
            loopback_client(None, ssl_context=tls.client) as (_, session),
            session.get(reg.url_for("/v2/", host="reg.test")) as resp,
        ):
            assert resp.status == 200
        async with loopback_client(None) as (_, session):
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(reg.url_for("/v2/", host="reg.test"))


async def test_oci_client_fixture_makes_sessions_through_the_middleware(
    oci_client: ClientFactory,
) -> None:
    async with ScriptedServer(registry) as reg:
        config = aociauth.ConfigFile.from_dict(
            {"auths": {reg.host: {"username": "alice", "password": "pw"}}}
        )
        session = await oci_client(config, resolve_names=False)
        async with session.get(reg.url_for("/v2/")) as resp:
            assert resp.status == 200
        other = await oci_client(None)
        assert other is not session
        async with other.get(reg.url_for("/v2/")) as resp:
            assert resp.status == 401
