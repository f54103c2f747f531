"""The shared token cache wired into the real adapters: a fleet against loopback servers.

Each middleware (or httpx auth) stands for a process of the fleet, with its own
:class:`~aociauth.redis.RedisTokenStore` (its own connections) on one real
``redis-server`` (:class:`aociauth.testing.redis.RedisServer`, persistence off),
in front of :class:`aociauth.testing.Registry` and :class:`~aociauth.testing.TokenServer`.
Everything is proved by counting: token requests, registry 401s, Redis commands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

import aociauth
from aociauth import ConfigFile, StdTransportParams
from aociauth.testing import Registry, TokenServer
from aociauth.testing.redis import RedisServer, find_redis_server

pytest.importorskip("redis", reason="the shared cache needs redis-py (extra redis)")

from aociauth.redis import RedisTokenStore

pytestmark = pytest.mark.skipif(
    find_redis_server() is None,
    reason="redis-server is not on PATH: apt-get install redis-server",
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
USERS = {"alice": "alice-password", "bob": "bob-password"}
MANIFEST = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
REPOS = [f"team/r{i:02d}" for i in range(12)]
#: Each token miss asks alone: these tests count what one process's per-scope tokens
#: save the others through Redis, which shared token requests (one token for many
#: scopes, as a burst's timing falls) would blur.
ALONE = 1
#: Call timeout where fetches are counted: a timeout is an outage and adds fetches
#: (rightly), and a loaded CI machine can stall an event loop for a while.
GENEROUS = 10.0


@pytest_asyncio.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    async with RedisServer() as server:
        yield server


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[tuple[TokenServer, Registry]]:
    async with (
        TokenServer(users=USERS) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
    ):
        for repo in REPOS:
            reg.seed_image(repo, "v1")
        yield ts, reg


def config(reg: Registry, user: str | None = "alice", **entry: str) -> ConfigFile:
    if user is None and not entry:
        return ConfigFile.from_dict({})
    fields: dict[str, str] = dict(entry)
    if user is not None:
        fields.update(username=user, password=USERS[user])
    return ConfigFile.from_dict({"auths": {reg.host: fields}})


def store(server: RedisServer, key: bytes = KEY, **options: Any) -> RedisTokenStore:
    options.setdefault("timeout", GENEROUS)
    return RedisTokenStore.from_url(server.url, key=key, **options)


async def pull(session: aiohttp.ClientSession, reg: Registry, repo: str) -> int:
    async with session.get(f"{reg.url}/v2/{repo}/manifests/v1", headers=MANIFEST) as resp:
        await resp.read()
        return resp.status


async def pull_all(
    reg: Registry, params: StdTransportParams, repos: list[str] = REPOS
) -> aociauth.AuthStats:
    """One process of the fleet: a cold middleware pulling ``repos`` at once."""
    async with (
        aociauth.new_std_transport(params) as mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
    ):
        statuses = await asyncio.gather(*(pull(session, reg, r) for r in repos))
        assert statuses == [200] * len(repos)
        return mw.stats


async def redis_calls(server: RedisServer) -> dict[str, int]:
    """Commands Redis ran since the last CONFIG RESETSTAT, by name (INFO commandstats)."""
    text = (await server.command("INFO", "commandstats")).decode()
    calls: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line.partition(":")
            fields = dict(kv.split("=", 1) for kv in stats.split(","))
            calls[name.removeprefix("cmdstat_")] = int(fields["calls"])
    for ours in ("info", "config", "config|resetstat"):
        calls.pop(ours, None)
    return calls


# -- sharing --------------------------------------------------------------------


async def test_a_second_cold_process_makes_no_token_request(
    redis_server: RedisServer, servers: tuple[TokenServer, Registry]
) -> None:
    ts, reg = servers
    async with store(redis_server) as first, store(redis_server) as second:
        one = await pull_all(
            reg,
            StdTransportParams(
                coalesce_token_requests=ALONE, config=config(reg), shared_cache=first
            ),
        )
        assert one.total_token_requests == len(REPOS)
        assert one.shared_hits == 0
        assert first.stats.writes == len(REPOS)
        asked = ts.counters.requests

        two = await pull_all(
            reg,
            StdTransportParams(
                coalesce_token_requests=ALONE, config=config(reg), shared_cache=second
            ),
        )
        assert two.total_token_requests == 0
        assert ts.counters.requests == asked
        assert two.shared_hits == len(REPOS)
        assert second.stats.hits == len(REPOS)
        assert second.stats.rejected_entries == 0


async def test_two_cold_processes_at_once_fetch_each_scope_once(
    redis_server: RedisServer, servers: tuple[TokenServer, Registry]
) -> None:
    ts, reg = servers
    async with store(redis_server) as first, store(redis_server) as second:
        stats = await asyncio.gather(
            pull_all(
                reg,
                StdTransportParams(
                    coalesce_token_requests=ALONE, config=config(reg), shared_cache=first
                ),
            ),
            pull_all(
                reg,
                StdTransportParams(
                    coalesce_token_requests=ALONE, config=config(reg), shared_cache=second
                ),
            ),
        )
    assert sum(s.total_token_requests for s in stats) == len(REPOS)
    assert ts.counters.requests == len(REPOS)
    assert sum(s.shared_hits for s in stats) == len(REPOS)


async def test_without_the_tier_each_process_fetches_its_own(
    servers: tuple[TokenServer, Registry],
) -> None:
    ts, reg = servers
    await pull_all(reg, StdTransportParams(coalesce_token_requests=ALONE, config=config(reg)))
    await pull_all(reg, StdTransportParams(coalesce_token_requests=ALONE, config=config(reg)))
    assert ts.counters.requests == 2 * len(REPOS)


async def test_the_httpx_adapter_shares_with_the_middleware(
    redis_server: RedisServer, servers: tuple[TokenServer, Registry]
) -> None:
    httpx = pytest.importorskip("httpx")
    from aociauth.httpx import RegistryAuth

    ts, reg = servers
    async with store(redis_server) as first, store(redis_server) as second:
        await pull_all(
            reg,
            StdTransportParams(
                coalesce_token_requests=ALONE, config=config(reg), shared_cache=first
            ),
        )
        asked = ts.counters.requests
        params = StdTransportParams(
            coalesce_token_requests=ALONE, config=config(reg), shared_cache=second
        )
        async with RegistryAuth(params) as auth, httpx.AsyncClient(auth=auth) as client:

            async def get(repo: str) -> int:
                r = await client.get(f"{reg.url}/v2/{repo}/manifests/v1", headers=MANIFEST)
                return r.status_code

            assert await asyncio.gather(*(get(r) for r in REPOS)) == [200] * len(REPOS)
            assert auth.stats.total_token_requests == 0
            assert auth.stats.shared_hits == len(REPOS)
        assert ts.counters.requests == asked


async def test_the_httpx_adapter_writes_back_for_the_middleware(
    redis_server: RedisServer, servers: tuple[TokenServer, Registry]
) -> None:
    httpx = pytest.importorskip("httpx")
    from aociauth.httpx import RegistryAuth

    ts, reg = servers
    async with store(redis_server) as first, store(redis_server) as second:
        params = StdTransportParams(
            coalesce_token_requests=ALONE, config=config(reg), shared_cache=first
        )
        async with RegistryAuth(params) as auth, httpx.AsyncClient(auth=auth) as client:
            for repo in REPOS[:3]:
                r = await client.get(f"{reg.url}/v2/{repo}/manifests/v1", headers=MANIFEST)
                assert r.status_code == 200
        assert ts.counters.requests == 3
        two = await pull_all(
            reg,
            StdTransportParams(
                coalesce_token_requests=ALONE, config=config(reg), shared_cache=second
            ),
            REPOS[:3],
        )
        assert two.total_token_requests == 0
        assert ts.counters.requests == 3


# -- who shares with whom ---------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"user": "alice"}, {"user": "bob"}, id="alice-then-bob"),
        pytest.param({"user": "alice"}, {"user": None}, id="alice-then-anonymous"),
        pytest.param({"user": None}, {"user": "alice"}, id="anonymous-then-alice"),
        pytest.param(
            {"user": None, "refresh": True},
            {"user": None, "refresh": True},
            id="two-refresh-tokens",
        ),
        pytest.param({"user": "alice"}, {"user": "alice", "key": OTHER_KEY}, id="another-key"),
    ],
)
async def test_separate_identities_share_nothing(
    redis_server: RedisServer,
    servers: tuple[TokenServer, Registry],
    first: dict[str, Any],
    second: dict[str, Any],
) -> None:
    ts, reg = servers

    def params(who: dict[str, Any], s: RedisTokenStore) -> StdTransportParams:
        entry = {}
        if who.get("refresh"):
            # A refresh token of alice's, another for each identity: the same user
            # name, but not the same credential.
            entry["identitytoken"] = ts.issue_refresh_token("alice")
        return StdTransportParams(
            coalesce_token_requests=ALONE, config=config(reg, who["user"], **entry), shared_cache=s
        )

    async with (
        store(redis_server, first.get("key", KEY)) as a,
        store(redis_server, second.get("key", KEY)) as b,
    ):
        one = await pull_all(reg, params(first, a))
        two = await pull_all(reg, params(second, b))
    assert one.total_token_requests == len(REPOS)
    assert two.total_token_requests == len(REPOS)
    assert two.shared_hits == 0
    assert b.stats.rejected_entries == 0  # nothing of the other's was even looked at


async def test_anonymous_processes_share_with_each_other(
    redis_server: RedisServer, servers: tuple[TokenServer, Registry]
) -> None:
    _ts, reg = servers
    async with store(redis_server) as a, store(redis_server) as b:
        one = await pull_all(
            reg,
            StdTransportParams(
                coalesce_token_requests=ALONE, config=config(reg, None), shared_cache=a
            ),
        )
        two = await pull_all(
            reg,
            StdTransportParams(
                coalesce_token_requests=ALONE, config=config(reg, None), shared_cache=b
            ),
        )
    assert one.token_requests == {"get_anonymous": len(REPOS)}
    assert two.total_token_requests == 0
    assert two.shared_hits == len(REPOS)


# -- a refused shared token ------------------------------------------------------------


async def test_a_shared_token_the_registry_refuses_leads_to_one_new_fetch(
    redis_server: RedisServer,
) -> None:
    async with (
        TokenServer(users=USERS, opaque_tokens=True) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
        store(redis_server) as first,
        store(redis_server) as second,
    ):
        reg.seed_image("team/app", "v1")
        one = await pull_all(
            reg,
            StdTransportParams(
                coalesce_token_requests=ALONE, config=config(reg), shared_cache=first
            ),
            ["team/app"],
        )
        assert one.total_token_requests == 1
        ts.revoke_opaque_tokens()  # the shared token is now refused by the registry
        reg.reset_counters()

        params = StdTransportParams(
            coalesce_token_requests=ALONE, config=config(reg), shared_cache=second
        )
        async with (
            aociauth.new_std_transport(params) as mw,
            aiohttp.ClientSession(middlewares=[mw]) as session,
        ):
            # Cold: the probe's 401, the refused shared token, then one token of its own.
            assert await pull(session, reg, "team/app") == 200
            assert mw.stats.total_token_requests == 1
            assert mw.stats.shared_hits == 1
            assert mw.stats.rewritten_403 == 0
            assert reg.counters.unauthorized == 2
            # Now warm: a local hit, nothing refused, nothing fetched.
            assert await pull(session, reg, "team/app") == 200
            assert mw.stats.total_token_requests == 1
            assert reg.counters.unauthorized == 2

        # A third process finds the new token, not the refused one.
        three = await pull_all(
            reg,
            StdTransportParams(
                coalesce_token_requests=ALONE, config=config(reg), shared_cache=first
            ),
            ["team/app"],
        )
        assert three.total_token_requests == 0
        assert three.shared_hits == 1
        assert reg.counters.unauthorized == 3  # its probe only


async def test_a_warm_process_whose_token_is_refused_skips_the_same_token_in_redis(
    redis_server: RedisServer,
) -> None:
    async with (
        TokenServer(users=USERS, opaque_tokens=True) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
        store(redis_server) as s,
    ):
        reg.seed_image("team/app", "v1")
        params = StdTransportParams(
            coalesce_token_requests=ALONE, config=config(reg), shared_cache=s
        )
        async with (
            aociauth.new_std_transport(params) as mw,
            aiohttp.ClientSession(middlewares=[mw]) as session,
        ):
            assert await pull(session, reg, "team/app") == 200
            assert mw.stats.total_token_requests == 1
            ts.revoke_opaque_tokens()
            reg.reset_counters()
            # Its cached token is refused; Redis holds that very token: skipped.
            for _ in range(3):
                assert await pull(session, reg, "team/app") == 200
            assert mw.stats.total_token_requests == 2
            assert mw.stats.shared_hits == 0
            assert reg.counters.unauthorized == 1


# -- a local hit never calls Redis -------------------------------------------------------


async def test_a_local_hit_never_calls_redis(
    redis_server: RedisServer, servers: tuple[TokenServer, Registry]
) -> None:
    _ts, reg = servers
    async with store(redis_server) as s:
        params = StdTransportParams(
            coalesce_token_requests=ALONE, config=config(reg), shared_cache=s
        )
        async with (
            aociauth.new_std_transport(params) as mw,
            aiohttp.ClientSession(middlewares=[mw]) as session,
        ):
            assert await asyncio.gather(*(pull(session, reg, r) for r in REPOS)) == [200] * len(
                REPOS
            )
            await redis_server.command("CONFIG", "RESETSTAT")
            assert await redis_calls(redis_server) == {}
            before = s.stats.as_dict()
            for _ in range(3):
                statuses = await asyncio.gather(*(pull(session, reg, r) for r in REPOS))
                assert statuses == [200] * len(REPOS)
            assert await redis_calls(redis_server) == {}
            assert s.stats.as_dict() == before
            assert mw.stats.cache_hits >= 3 * len(REPOS)
            # A miss does call it: the counting works.
            reg.seed_image("team/new", "v1")
            assert await pull(session, reg, "team/new") == 200
            assert (await redis_calls(redis_server)).get("hgetall", 0) >= 1


# -- a dead Redis ------------------------------------------------------------------------


async def test_redis_killed_mid_burst_fails_no_request(
    redis_server: RedisServer,
    servers: tuple[TokenServer, Registry],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ts, reg = servers
    more = [f"team/more{i:02d}" for i in range(12)]
    for repo in more:
        reg.seed_image(repo, "v1")
    caplog.set_level(logging.WARNING, logger="aociauth")
    async with store(redis_server, timeout=2.0, backoff=0.05, max_backoff=0.1) as s:
        params = StdTransportParams(
            coalesce_token_requests=ALONE, config=config(reg), shared_cache=s
        )
        async with (
            aociauth.new_std_transport(params) as mw,
            aiohttp.ClientSession(middlewares=[mw]) as session,
        ):
            # The registry's token server has granted a fetch ahead (so a burst's fetches
            # go at once), then a burst whose token fetches are held at the token server,
            # holding their Redis locks: Redis dies under them.
            reg.seed_image("team/warm", "v1")
            assert await pull(session, reg, "team/warm") == 200
            warm = mw.stats.total_token_requests
            ts.pause()
            burst = asyncio.gather(*(pull(session, reg, r) for r in REPOS))
            await ts.wait_for_requests(warm + 1)
            await redis_server.kill()
            ts.resume()
            assert await burst == [200] * len(REPOS)
            # A second burst with Redis dead: every request still succeeds.
            assert await asyncio.gather(*(pull(session, reg, r) for r in more)) == [200] * len(more)
            assert mw.stats.total_token_requests <= warm + len(REPOS) + len(more)
            assert s.stats.outages == 1
            assert s.stats.errors >= 1
            outage_lines = [r for r in caplog.records if "failed" in r.getMessage()]
            assert len(outage_lines) == 1  # one line per outage, not per request

            # Redis comes back (empty: persistence is off) and is used again.
            await redis_server.start()
            await asyncio.sleep(0.15)  # past the store's back-off
            reg.seed_image("team/after", "v1")
            writes = s.stats.writes
            assert await pull(session, reg, "team/after") == 200
            assert s.stats.writes == writes + 1
            assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_a_paused_redis_delays_a_cold_request_by_the_timeout_at_most_once(
    redis_server: RedisServer, servers: tuple[TokenServer, Registry]
) -> None:
    _ts, reg = servers
    async with store(redis_server, timeout=0.2, backoff=30.0, max_backoff=30.0) as s:
        params = StdTransportParams(
            coalesce_token_requests=ALONE, config=config(reg), shared_cache=s
        )
        redis_server.pause()  # accepts connections, never answers
        try:
            mw_stats = await pull_all(reg, params)
        finally:
            redis_server.resume()
    assert mw_stats.total_token_requests == len(REPOS)
    assert s.stats.outages == 1
    # After the first timeout the store skips Redis for its back-off: no call waits on it.
    assert s.stats.skipped >= 1
