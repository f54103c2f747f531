"""No wasted round trip: scope inference, authorising ahead of the 401, first contact,
refresh ahead, per-namespace credentials, token-server resilience, observability.

The registry here is a minimal distribution-like manifest endpoint that checks
the JWTs of aociauth.testing's TokenServer; everything is counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth import ConfigFile, RequestInfo, StdTransportParams, parse_scope, with_request_info
from aociauth.testing import ScriptedServer, TokenServer

_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")


@dataclass
class V2:
    """A manifest-only registry in token mode; counts what it saw."""

    ts: TokenServer
    server: ScriptedServer | None = None
    statuses: list[int] = field(default_factory=list)
    users: list[str | None] = field(default_factory=list)
    answer_429: bool = False

    @property
    def base(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def host(self) -> str:
        assert self.server is not None
        return self.server.host

    def count(self, status: int) -> int:
        return self.statuses.count(status)

    async def handler(self, req: web.Request) -> web.StreamResponse:
        resp = self._answer(req)
        self.statuses.append(resp.status)
        return resp

    def _answer(self, req: web.Request) -> web.Response:
        if self.answer_429:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        m = _MANIFEST.match(req.path)
        need = f"repository:{m['name']}:pull" if m else ""
        claims = None
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            try:
                claims = self.ts.issuer.verify(auth[7:])
            except ValueError:
                claims = None
        granted = {
            f"{a['type']}:{a['name']}:{act}"
            for a in (claims or {}).get("access", [])
            for act in a["actions"]
        }
        if claims is None or (need and need not in granted):
            challenge = f'Bearer realm="{self.ts.realm}",service="{self.ts.service}"'
            if need:
                challenge += f',scope="{need}"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        self.users.append(claims.get("sub") or None)
        return web.Response(text=f"manifest of {m['name'] if m else '-'}")


@pytest.fixture
async def v2() -> AsyncIterator[V2]:
    async with TokenServer(users={"alice": "pw-alice", "bob": "pw-bob"}) as ts:
        reg = V2(ts)
        async with ScriptedServer(reg.handler) as reg.server:
            yield reg


def config_for(reg: V2, auths: dict[str, dict[str, str]] | None = None) -> ConfigFile:
    if auths is None:
        auths = {reg.host: {"username": "alice", "password": "pw-alice"}}
    return ConfigFile.from_dict({"auths": auths})


async def pull(session: aiohttp.ClientSession, reg: V2, repo: str) -> int:
    async with session.get(f"{reg.base}/v2/{repo}/manifests/latest") as r:
        await r.read()
        return r.status


async def test_n_new_repositories_cost_one_401_not_n(v2: V2) -> None:
    n = 30
    for params, expected_401s in (
        (StdTransportParams(config=config_for(v2)), 1),
        (StdTransportParams.original_policy(config=config_for(v2)), n),
    ):
        v2.statuses.clear()
        async with (
            aociauth.new_std_transport(params) as mw,
            aiohttp.ClientSession(middlewares=[mw]) as session,
        ):
            for i in range(n):
                assert await pull(session, v2, f"team/app{i}") == 200
        assert v2.count(401) == expected_401s
        assert v2.count(200) == n
        assert mw.stats.total_token_requests == n


async def test_cold_burst_of_1000_costs_one_401_and_one_token_request(v2: V2) -> None:
    async with (
        aociauth.new_std_transport(StdTransportParams(config=config_for(v2))) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        statuses = await asyncio.gather(*(pull(session, v2, "team/hot") for _ in range(1000)))
    assert statuses == [200] * 1000
    assert v2.count(401) == 1
    assert v2.ts.counters.requests == 1
    assert mw.stats.first_contact_waits >= 999


async def test_caller_request_info_wins_over_inference(v2: V2) -> None:
    async with (
        aociauth.new_std_transport(StdTransportParams(config=config_for(v2))) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        assert await pull(session, v2, "team/a") == 200
        wide = parse_scope("repository:team/b:pull repository:team/c:pull")
        with with_request_info(RequestInfo(wide)):
            assert await pull(session, v2, "team/b") == 200
        # team/c is held by the token fetched for the caller's wider RequestInfo.
        assert await pull(session, v2, "team/c") == 200
    assert v2.ts.counters.requests == 2
    assert v2.count(401) == 1


async def test_failed_early_fetch_falls_back_to_the_challenge(v2: V2) -> None:
    """A picky token server that refuses the inferred scope: never worse than the original."""
    async with (
        aociauth.new_std_transport(StdTransportParams(config=config_for(v2))) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        assert await pull(session, v2, "team/a") == 200
        v2.ts.fail_next(1, status=401)
        assert await pull(session, v2, "team/b") == 200
    assert mw.stats.fetches_ahead_failed == 1
    assert v2.count(401) == 2  # the first contact, and the fallback to the registry's challenge


async def test_refresh_ahead_keeps_requests_off_the_token_server(v2: V2) -> None:
    v2.ts.expires_in = 4
    params = StdTransportParams(config=config_for(v2), refresh_fraction=0.6)
    async with (
        aociauth.new_std_transport(params) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        assert await pull(session, v2, "team/a") == 200  # token issued, 4 s of life
        await asyncio.sleep(1.8)  # now in the last 60 %: this hit starts a background refresh
        assert await pull(session, v2, "team/a") == 200
        for _ in range(100):
            if mw.stats.refreshes_ahead and not mw._core.in_flight():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.5)  # past the first token's usable life
        misses = mw.stats.cache_misses
        assert await pull(session, v2, "team/a") == 200
        assert mw.stats.cache_misses == misses  # served from the refreshed token
    assert mw.stats.refreshes_ahead == 1
    assert v2.ts.counters.requests == 2
    assert v2.count(401) == 1


async def test_close_cancels_a_refresh_in_flight(v2: V2) -> None:
    v2.ts.expires_in = 2
    params = StdTransportParams(config=config_for(v2), refresh_fraction=0.9)
    mw = aociauth.new_std_transport(params)
    async with aiohttp.ClientSession(middlewares=[mw]) as session:
        assert await pull(session, v2, "team/a") == 200
        v2.ts.latency = 30
        await asyncio.sleep(0.3)
        assert await pull(session, v2, "team/a") == 200
        await asyncio.sleep(0.1)
        assert mw._tasks, "a refresh should be running"
        await asyncio.wait_for(mw.close(), 5)
    assert not mw._tasks


async def test_per_namespace_credentials_never_share_a_token(v2: V2) -> None:
    cfg = config_for(
        v2,
        {
            v2.host: {"username": "alice", "password": "pw-alice"},
            f"{v2.host}/team-b": {"username": "bob", "password": "pw-bob"},
        },
    )
    async with (
        aociauth.new_std_transport(StdTransportParams(config=cfg)) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        assert await pull(session, v2, "team-a/app") == 200
        assert await pull(session, v2, "team-b/app") == 200
        assert await pull(session, v2, "team-b/app/sub") == 200
        assert await pull(session, v2, "team-bx/app") == 200  # not under team-b
    assert v2.users == ["alice", "bob", "bob", "alice"]
    users = [r.username for r in v2.ts.requests]
    assert users == ["alice", "bob", "bob", "alice"]


async def test_token_server_5xx_and_429_are_retried_with_backoff(v2: V2) -> None:
    params = StdTransportParams(config=config_for(v2), retry_backoff=0.01, retry_max_wait=0.05)
    async with (
        aociauth.new_std_transport(params) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        v2.ts.fail_next(1, status=503)
        v2.ts.fail_next(1, status=429, retry_after="1")
        assert await pull(session, v2, "team/a") == 200
        assert mw.stats.token_server_retries == 2
        v2.ts.fail_next(3, status=502)
        with pytest.raises(aociauth.TokenServerError) as ei:
            await pull(session, v2, "team/b")
    assert ei.value.status == 502
    assert isinstance(ei.value, aiohttp.ClientError)
    assert "127.0.0.1" in str(ei.value)
    # Retried three times in all, and a server that is down is not asked again for the 401.
    assert v2.ts.counters.failures_injected == 5


async def test_registry_429_is_passed_through_without_a_token_fetch(v2: V2) -> None:
    v2.answer_429 = True
    async with (
        aociauth.new_std_transport(StdTransportParams(config=config_for(v2))) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
        session.get(f"{v2.base}/v2/team/a/manifests/latest") as r,
    ):
        assert r.status == 429
        assert r.headers["Retry-After"] == "1"
        assert await r.text() == "slow down"
    assert v2.ts.counters.requests == 0
    assert mw.stats.total_token_requests == 0
    assert mw.stats.registry_429s == 1


async def test_debug_log_tells_the_story_without_secrets(
    v2: V2, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aociauth")
    async with (
        aociauth.new_std_transport(StdTransportParams(config=config_for(v2))) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        assert await pull(session, v2, "team/a") == 200
        tok = mw.cached_token(v2.base, parse_scope("repository:team/a:pull"))
    assert tok is not None
    text = caplog.text
    assert "token request 1/3" in text
    assert "repository:team/a:pull" in text
    assert "pw-alice" not in text
    assert tok.value not in text
    stats = mw.stats.as_dict()
    assert stats["responses_401"] == 1
    assert stats["token_requests"] == {"get_basic": 1}


async def test_responses_and_their_errors_carry_no_credential(v2: V2) -> None:
    async with (
        aociauth.new_std_transport(StdTransportParams(config=config_for(v2))) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        async with session.get(f"{v2.base}/v2/team/a/manifests/latest") as r:
            assert r.status == 200
            assert "Authorization" not in r.request_info.headers
        tok = mw.cached_token(v2.base)
        assert tok is not None
        v2.answer_429 = True
        async with session.get(f"{v2.base}/v2/team/a/manifests/latest") as r:
            with pytest.raises(aiohttp.ClientResponseError) as ei:
                r.raise_for_status()
    assert tok.value not in repr(ei.value)
    assert "pw-alice" not in repr(ei.value)


async def test_a_huge_wanted_scope_is_not_sent(v2: V2) -> None:
    huge = aociauth.new_scope(
        *(aociauth.ResourceScope("repository", f"team/r{i}", "pull") for i in range(1000))
    )
    async with (
        aociauth.new_std_transport(StdTransportParams(config=config_for(v2))) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        with aociauth.with_scope(huge):
            assert await pull(session, v2, "team/a") == 200
    scopes = [r.scopes for r in v2.ts.requests]
    assert scopes == [("repository:team/a:pull",)]


async def test_a_burst_runs_the_credential_helper_once(v2: V2) -> None:
    calls: list[tuple[str, str]] = []

    async def runner(helper: str, server_url: str) -> aociauth.ConfigEntry:
        calls.append((helper, server_url))
        await asyncio.sleep(0.05)
        return aociauth.ConfigEntry(username="alice", password="pw-alice")

    cfg = ConfigFile.from_dict({"credHelpers": {v2.host: "fake"}}, runner=runner)
    async with (
        aociauth.new_std_transport(StdTransportParams(config=cfg)) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        statuses = await asyncio.gather(*(pull(session, v2, f"team/r{i % 5}") for i in range(50)))
    assert statuses == [200] * 50
    assert calls == [("fake", v2.host)]
    assert mw.stats.helper_runs == 1
    assert mw.stats.config_lookups == 1


@pytest.mark.parametrize("policy", ["aociauth", "original"])
async def test_a_config_access_token_goes_with_the_first_request(v2: V2, policy: str) -> None:
    token = v2.ts.issuer.issue(
        subject="alice",
        access=[{"type": "repository", "name": "team/a", "actions": ["pull"]}],
        expires_in=300,
    )
    cfg = ConfigFile.from_dict({"auths": {v2.host: {"registrytoken": token}}})
    params = (
        StdTransportParams(config=cfg)
        if policy == "aociauth"
        else StdTransportParams.original_policy(config=cfg)
    )
    async with (
        aociauth.new_std_transport(params) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        assert await pull(session, v2, "team/a") == 200
    assert v2.statuses == [200]
    assert v2.ts.counters.requests == 0
