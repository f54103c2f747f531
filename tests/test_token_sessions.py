"""Token requests: the address rule holds for pooled connections, and no ambient state travels.

Every server here is on 127.0.0.1. Names resolve through a table resolver, so a
name can stand for "a host the registry does not share" while still reaching
a loopback test server, as a rebinding attacker's name would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from aociauth._addresses import TrustDecision
from aociauth._resolver import RealmAddressError, RealmGuardResolver, loopback_allowed
from aociauth._token_sessions import TokenSessions
from aociauth.testing.client import TableResolver
from aociauth.testing.scripted import ScriptedServer

PUBLIC_TRUST = TrustDecision(loopback=False, private=True)
LOCAL_TRUST = TrustDecision(loopback=True, private=True)
TABLE = {"token.test": "127.0.0.1", "other-realm.test": "127.0.0.1"}


class TableDNS:
    r"""Makes :class:`TableResolver`\ s for TABLE (as TokenSessions' ``inner_resolver``), and
    keeps them, so a test counts every lookup any of them made."""

    def __init__(self) -> None:
        self.made: list[TableResolver] = []

    def __call__(self) -> TableResolver:
        resolver = TableResolver(TABLE)
        self.made.append(resolver)
        return resolver

    @property
    def lookups(self) -> int:
        return sum(len(r.asked) for r in self.made)


def cookies_seen(server: ScriptedServer) -> list[tuple[str, str | None]]:
    """Each request's path and Cookie header, in arrival order."""
    return [(e.path, e.headers.get("Cookie")) for e in server.requests]


@pytest.fixture
async def token_server() -> AsyncIterator[ScriptedServer]:
    """A token endpoint that records each request's Cookie header and sets a cookie."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.json_response({"token": f"tok-{len(server.requests)}"})
        # What a hostile or merely stateful token server does: remember the client.
        resp.set_cookie("session", "identity-of-alice-CANARY", path="/")
        return resp

    async with ScriptedServer(handle) as server:
        yield server


async def _token_get(session: aiohttp.ClientSession, url: str) -> int:
    # The call the middleware makes (_token_http): no redirects, no middlewares.
    async with session.get(url, allow_redirects=False, middlewares=()) as resp:
        await resp.read()
        return resp.status


async def test_pooled_connection_bypass_of_one_shared_pool_is_closed(
    token_server: ScriptedServer,
) -> None:
    """Reproduces the bypass of the old mechanism, then shows the new one refuses.

    Old mechanism (middleware._token_session up to this change): one session
    whose TCPConnector resolves through RealmGuardResolver, which reads the
    ``loopback_allowed`` context variable set around each token request.

    1. A registry on this machine sends its client to the realm
       ``http://token.test:P/token``; ``token.test`` resolves to 127.0.0.1 and
       loopback is allowed, so the connection is made and, after the answer,
       kept in the pool.
    2. A public registry (loopback not allowed) names the same realm. A fresh
       connection would be refused at resolution, but the connector finds a
       pooled connection for (token.test, P) and sends the request on it
       without resolving: the token request reaches the loopback server.

    With TokenSessions the two requests are judged under different trust
    decisions, hence different pools, and step 2 is refused at resolution.
    """
    url = f"http://token.test:{token_server.port}/token"

    # The guard on its own does refuse step 2 on a fresh connection...
    fresh = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            resolver=RealmGuardResolver(TableResolver(TABLE)), use_dns_cache=False
        )
    )
    async with fresh:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await _token_get(fresh, url)
    assert isinstance(refused.value.os_error, RealmAddressError)
    assert token_server.requests == []

    # ...but the old shared pool lets step 2 through on step 1's connection.
    old = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            resolver=RealmGuardResolver(TableResolver(TABLE)), use_dns_cache=False
        )
    )
    async with old:
        reset = loopback_allowed.set(True)
        try:
            assert await _token_get(old, url) == 200  # step 1: registry on this machine
        finally:
            loopback_allowed.reset(reset)
        assert loopback_allowed.get() is False
        assert await _token_get(old, url) == 200  # step 2: the bypass
    assert len(token_server.requests) == 2

    # The new owner: one pool per decision, so step 2 resolves, and is refused.
    token_server.reset()
    async with TokenSessions(inner_resolver=TableDNS()) as sessions:
        assert await _token_get(sessions.session_for(LOCAL_TRUST), url) == 200
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await _token_get(sessions.session_for(PUBLIC_TRUST), url)
        assert isinstance(refused.value.os_error, RealmAddressError)
        # Step 1's decision still has its pool, and it still works.
        assert await _token_get(sessions.session_for(LOCAL_TRUST), url) == 200
    assert len(token_server.requests) == 2


async def test_each_decision_has_its_own_session_and_connector() -> None:
    async with TokenSessions() as sessions:
        local = sessions.session_for(LOCAL_TRUST)
        public = sessions.session_for(PUBLIC_TRUST)
        assert local is not public
        assert local.connector is not public.connector
        assert sessions.session_for(TrustDecision(loopback=True, private=True)) is local
        assert sessions.decisions == {LOCAL_TRUST, PUBLIC_TRUST}
        for session, trust in ((local, LOCAL_TRUST), (public, PUBLIC_TRUST)):
            assert isinstance(session.connector, aiohttp.TCPConnector)
            resolver = session.connector._resolver
            assert isinstance(resolver, RealmGuardResolver)
            assert resolver.trust == trust
    assert local.closed
    assert public.closed
    with pytest.raises(RuntimeError, match="closed"):
        sessions.session_for(LOCAL_TRUST)


async def test_a_connection_is_reused_within_one_decision(token_server: ScriptedServer) -> None:
    # The split costs nothing within a decision: keep-alive still works there.
    dns = TableDNS()
    url = f"http://token.test:{token_server.port}/token"
    async with TokenSessions(inner_resolver=dns) as sessions:
        for _ in range(3):
            assert await _token_get(sessions.session_for(LOCAL_TRUST), url) == 200
    assert dns.lookups == 1


async def test_token_sessions_store_and_send_no_cookies(token_server: ScriptedServer) -> None:
    """A token server sets a cookie on its first answer; a second token request (another
    realm on the same host:port, anonymously) must carry no Cookie header."""
    first = f"http://token.test:{token_server.port}/realm-a/token?service=a"
    second = f"http://token.test:{token_server.port}/realm-b/token?service=b"
    async with TokenSessions(inner_resolver=TableDNS()) as sessions:
        session = sessions.session_for(LOCAL_TRUST)
        assert await _token_get(session, first) == 200
        assert await _token_get(session, second) == 200
        assert len(session.cookie_jar) == 0
    assert cookies_seen(token_server) == [("/realm-a/token", None), ("/realm-b/token", None)]


async def test_a_default_session_would_have_carried_the_cookie(
    token_server: ScriptedServer,
) -> None:
    # The same exchange over a session like the one the middleware made until now
    # (aiohttp's default cookie jar): the second realm is told the first one's cookie.
    first = f"http://token.test:{token_server.port}/realm-a/token"
    second = f"http://token.test:{token_server.port}/realm-b/token"
    connector = aiohttp.TCPConnector(resolver=TableResolver(TABLE), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _token_get(session, first)
        await _token_get(session, second)
    assert cookies_seen(token_server)[1] == ("/realm-b/token", "session=identity-of-alice-CANARY")


async def test_token_sessions_ignore_proxy_settings_of_the_environment(
    token_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # trust_env would send token requests (and their credentials) through whatever
    # proxy the environment names; here a proxy that does not exist.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    async with TokenSessions(inner_resolver=TableDNS()) as sessions:
        url = f"http://token.test:{token_server.port}/token"
        assert await _token_get(sessions.session_for(LOCAL_TRUST), url) == 200
