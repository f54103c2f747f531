"""Issue 10, item 9: a registry redirecting to ever new hosts does not grow our state.

Every table the core keeps per origin, per identity or per partition is bounded
(least recently used out). At the core, with plain values, 100,000 distinct
redirect targets go through a core with a small ``max_origins``; through the
real middleware, 2,000 distinct host names (all 127.0.0.1 via a resolver) are
reached by redirects from a loopback registry. ``benchmarks/redirect_hosts.py``
shows the memory staying flat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sized

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

import aociauth
from aociauth.config import ConfigEntry
from aociauth.core import (
    AuthCore,
    FetchToken,
    FlowPolicy,
    LookupCredentials,
    Reply,
    RequestFacts,
    Resend,
    Send,
    TokenReply,
)
from aociauth.testing.client import TableResolver
from aociauth.testing.scripted import Handler, ScriptedServer

MAX_ORIGINS = 64
CACHE_SIZE = 256


def sizes(core: AuthCore) -> dict[str, int]:
    """The length of every table the core (and its origin table and cache) holds, each
    counted once, under its owner's name (the core holds some of the others' tables
    itself, for its hot path)."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    for owner, prefix in ((core.origins, "origins."), (core.cache, "cache."), (core, "")):
        for name, value in vars(owner).items():
            sized = isinstance(value, Sized) and not isinstance(value, str | bytes)
            if sized and id(value) not in seen:
                seen.add(id(value))
                out[prefix + name] = len(value)
    return out


def challenge_line(host: str) -> str:
    return f'Bearer realm="https://{host}/token",service="cdn",scope="repository:a:pull"'


def one_request(core: AuthCore, host: str, challenged: bool, now: float) -> None:
    """A redirected blob GET to ``host`` through the core's request flow, answered from
    plain values: 200 at once, or a Bearer challenge, a token, then 200."""
    facts = RequestFacts("GET", URL(f"https://{host}/v2/a/blobs/sha256:{host}"))
    flow = core.request_flow(facts)
    replies = [Reply(401, (challenge_line(host),)), Reply(200)] if challenged else [Reply(200)]
    value: object = None
    for _ in range(20):
        try:
            effect = core.resume(flow, value, now)
        except StopIteration:
            return
        value = None
        if isinstance(effect, LookupCredentials):
            value = ConfigEntry(username="alice", password=f"pw-{host}")
        elif isinstance(effect, Send | Resend):
            value = replies.pop(0)
        elif isinstance(effect, FetchToken):
            fetch = core.fetch_flow(effect.job)
            answer: object = None
            try:
                while True:
                    core.resume(fetch, answer, now)
                    body = b'{"token":"t-%s","expires_in":300,"refresh_token":"r-%s"}' % (
                        host.encode(),
                        host.encode(),
                    )
                    answer = TokenReply(200, body)
            except StopIteration as stop:
                value = stop.value
            core.fetch_ended(effect.key)
    raise AssertionError(f"the flow for {host} did not end")


def test_100k_redirect_hosts_leave_every_core_table_bounded() -> None:
    core = AuthCore(FlowPolicy(max_origins=MAX_ORIGINS, cache_size=CACHE_SIZE))
    biggest: dict[str, int] = {}
    for i in range(100_000):
        # One host in ten challenges, so identities, partitions, tokens and refresh
        # tokens are made for it; the rest answer at once.
        one_request(core, f"h{i}.cdn.test", challenged=i % 10 == 0, now=float(i) / 1000)
        if i % 997 == 0 or i > 99_990:
            for name, n in sizes(core).items():
                biggest[name] = max(biggest.get(name, 0), n)
    assert len(core.origins) <= MAX_ORIGINS
    for name, n in biggest.items():
        bound = CACHE_SIZE if name.startswith("cache") else 2 * MAX_ORIGINS
        assert n <= bound, f"{name} grew to {n}"
    # Something was learnt and kept: the check is not vacuous.
    assert biggest["origins._states"] == MAX_ORIGINS
    assert biggest["_partitions"] > MAX_ORIGINS // 2
    assert biggest["_refresh"] > 0
    assert biggest["cache._lru"] > 0


# -- through the real middleware ------------------------------------------------------------

HOSTS = 2_000
SMALL = 32


def _handler(counts: dict[str, int]) -> Handler:
    """One loopback server playing registry (127.0.0.1), CDN (``*.cdn.test``) and realm.

    The registry wants a token, then redirects blob ``n`` to ``hn.cdn.test``; one CDN
    host in four challenges too (so the core learns it and fetches a token for it).
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        port = request.url.port
        realm = f"http://127.0.0.1:{port}/token"
        counts[request.path.split("/")[1]] = counts.get(request.path.split("/")[1], 0) + 1
        if request.path == "/token":
            return web.json_response({"token": "tok", "expires_in": 300})
        challenge = {"WWW-Authenticate": f'Bearer realm="{realm}",scope="repository:a:pull"'}
        authorized = request.headers.get("Authorization") == "Bearer tok"
        host = request.host.split(":")[0]
        if host.endswith(".cdn.test"):
            n = int(host.split(".")[0][1:])
            if n % 4 == 0 and not authorized:
                return web.Response(status=401, headers=challenge)
            return web.Response(body=b"blob")
        if not authorized:
            return web.Response(status=401, headers=challenge)
        n = int(request.path.rsplit(":", 1)[1])
        raise web.HTTPTemporaryRedirect(f"http://h{n}.cdn.test:{port}/cdn/blob")

    return handle


async def test_2000_redirect_hosts_through_the_middleware_stay_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aociauth")
    counts: dict[str, int] = {}
    server = ScriptedServer(_handler(counts))
    await server.start()
    params = aociauth.StdTransportParams(
        config=aociauth.ConfigFile.from_dict(
            {"auths": {f"127.0.0.1:{server.port}": {"username": "alice", "password": "pw"}}}
        ),
        # The CDN hosts' realm is on loopback, as the registry's is.
        realm_policy=aociauth.RealmPolicy(allow_private_realms=True),
        serialize_token_fetches=True,
        cache_size=SMALL * 4,
    )
    mw = aociauth.new_std_transport(params)
    # No public knob sets max_origins: shrink the bound the core and the lookup memo use,
    # so 2,000 hosts are many times over it.
    core = mw._core
    core.policy = dataclasses.replace(core.policy, max_origins=SMALL)
    core.origins.max_origins = SMALL
    mw._credentials._max = SMALL
    # Every CDN host's name is 127.0.0.1; nothing else resolves.
    resolver = TableResolver({f"h{n}.cdn.test": "127.0.0.1" for n in range(HOSTS)})
    biggest: dict[str, int] = {}
    try:
        async with aiohttp.ClientSession(
            middlewares=[mw], connector=aiohttp.TCPConnector(resolver=resolver, limit=8)
        ) as session:
            base = f"http://127.0.0.1:{server.port}/v2/a/blobs/sha256:"

            async def one(n: int) -> None:
                async with session.get(f"{base}{n}") as resp:
                    assert resp.status == 200, resp.status
                    assert await resp.read() == b"blob"

            for start in range(0, HOSTS, 50):
                await asyncio.wait_for(
                    asyncio.gather(*(one(n) for n in range(start, start + 50))), 60
                )
                extra = {
                    "credentials._entries": len(mw._credentials._entries),
                    "credentials._renewals": len(mw._credentials._renewals),
                    "mw._locks": len(mw._locks),
                    "mw._probes": len(mw._probes),
                    "token sessions": len(mw._sessions.decisions),
                }
                for name, n in {**sizes(core), **extra}.items():
                    biggest[name] = max(biggest.get(name, 0), n)
    finally:
        await mw.close()
        await server.stop()
    assert len(resolver.asked) >= HOSTS
    assert counts["cdn"] >= HOSTS
    assert counts["token"] >= HOSTS // 4
    for name, n in biggest.items():
        bound = SMALL * 4 if name.startswith("cache") else 2 * SMALL
        assert n <= bound, f"{name} grew to {n} after {HOSTS} redirect hosts"
    assert biggest["origins._states"] == SMALL
