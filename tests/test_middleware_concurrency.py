"""Concurrency done right: shared fetches, parallel scopes, cancellation, no cached failure.

Everything is proven by counting what the loopback servers received, never by
timing: the "parallel" test counts the peak number of token requests the token
server held at once.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict

import aociauth
from aociauth import ConfigEntry, RequestInfo, parse_scope, with_request_info
from aociauth.testing.gotest import HTTPError, echo_token, repo_gate, start, token_for
from aociauth.testing.pytest_plugin import ClientFactory
from aociauth.testing.scripted import ConfigFunc


async def test_500_concurrent_cold_requests_make_one_token_request(
    stack: list[object], oci_client: ClientFactory
) -> None:
    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        await asyncio.sleep(0.05)
        return {"token": token_for(parse_scope(" ".join(form.getall("scope", []))))}

    s = await start(repo_gate(lambda: s.realm), auth)
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda h: ConfigEntry()))
    need = parse_scope("repository:foo:pull")

    async def one() -> int:
        with with_request_info(RequestInfo(need)):
            async with session.post(s.url("/test/foo"), data=b"test body") as r:
                await r.read()
                return r.status

    statuses = await asyncio.gather(*(one() for _ in range(500)))
    assert statuses == [200] * 500
    assert len(s.auth_hits) == 1
    # First contact: one request learns the challenge, the other 499 wait for it.
    assert sum(1 for r in s.target_hits if "Authorization" not in r.headers) == 1
    assert len(s.target_hits) == 501


async def test_twenty_scopes_fetch_in_parallel(
    stack: list[object], oci_client: ClientFactory
) -> None:
    in_flight = 0
    peak = 0
    release = asyncio.Event()

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        nonlocal in_flight, peak
        scope = parse_scope(" ".join(form.getall("scope", [])))
        if "warm" not in str(scope):
            in_flight += 1
            peak = max(peak, in_flight)
            if peak >= 20:
                release.set()
            # Hold every fetch until all twenty are in at once (or give up after a bound,
            # in which case the peak assertion below fails).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(release.wait(), 10)
            in_flight -= 1
        return {"token": token_for(parse_scope(" ".join(form.getall("scope", []))))}

    s = await start(repo_gate(lambda: s.realm), auth)
    stack.append(s)
    # Each miss asks alone: shared token requests would fold the twenty into two, and
    # this test is about distinct fetches never waiting for each other (no lock).
    session = await oci_client(ConfigFunc(lambda h: ConfigEntry()), coalesce_token_requests=1)
    # Teach the middleware the registry's challenge first.
    async with session.post(s.url("/test/warm"), data=b"test body") as r:
        assert r.status == 200

    async def one(i: int) -> int:
        async with session.post(s.url(f"/test/r{i}"), data=b"test body") as r:
            return r.status

    statuses = await asyncio.gather(*(one(i) for i in range(20)))
    assert statuses == [200] * 20
    assert peak == 20
    assert len(s.auth_hits) == 21


async def test_original_policy_serialises_fetches(stack: list[object]) -> None:
    in_flight = 0
    peak = 0

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return {"token": token_for(parse_scope(" ".join(form.getall("scope", []))))}

    s = await start(repo_gate(lambda: s.realm), auth)
    stack.append(s)
    mw = aociauth.new_std_transport(
        aociauth.StdTransportParams.original_policy(config=ConfigFunc(lambda h: ConfigEntry()))
    )
    session = aiohttp.ClientSession(middlewares=[mw])
    stack.extend([mw, session])

    async def one(i: int) -> int:
        async with session.post(s.url(f"/test/r{i}"), data=b"test body") as r:
            return r.status

    assert await asyncio.gather(*(one(i) for i in range(10))) == [200] * 10
    assert peak == 1
    # No inference and no coalescing: every request paid a 401.
    assert mw.stats.responses_401 == 10


async def test_cancelled_waiter_does_not_cancel_shared_fetch(
    stack: list[object], oci_client: ClientFactory
) -> None:
    started = asyncio.Event()
    go_on = asyncio.Event()

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        started.set()
        await go_on.wait()
        return {"token": token_for(parse_scope(" ".join(form.getall("scope", []))))}

    s = await start(repo_gate(lambda: s.realm), auth)
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda h: ConfigEntry()))

    async def one() -> int:
        async with session.post(s.url("/test/foo"), data=b"test body") as r:
            return r.status

    first = asyncio.ensure_future(one())
    await started.wait()
    second = asyncio.ensure_future(one())
    await asyncio.sleep(0.05)  # let the second join the shared fetch
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    go_on.set()
    assert await second == 200
    assert len(s.auth_hits) == 1


async def test_failure_is_not_cached(stack: list[object], oci_client: ClientFactory) -> None:
    calls = 0

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise HTTPError(403, body="no")
        return {"token": token_for(parse_scope(" ".join(form.getall("scope", []))))}

    s = await start(repo_gate(lambda: s.realm), auth)
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda h: ConfigEntry()))
    with pytest.raises(aociauth.TokenServerError) as ei:
        await session.post(s.url("/test/foo"), data=b"test body")
    assert ei.value.status == 403
    assert isinstance(ei.value, aiohttp.ClientError)
    async with session.post(s.url("/test/foo"), data=b"test body") as r:
        assert r.status == 200
    assert calls == 2


async def test_small_pool_with_big_401_bodies_does_not_deadlock(stack: list[object]) -> None:
    big = "x" * (1024 * 1024)

    s = await start(repo_gate(lambda: s.realm, body=big), echo_token)
    stack.append(s)
    mw = aociauth.new_std_transport(
        aociauth.StdTransportParams(
            config=ConfigFunc(lambda h: ConfigEntry()), coalesce_first_contact=False
        )
    )
    session = aiohttp.ClientSession(middlewares=[mw], connector=aiohttp.TCPConnector(limit=2))
    stack.extend([mw, session])

    async def one(i: int) -> int:
        async with session.post(s.url(f"/test/r{i % 3}"), data=b"test body") as r:
            await r.read()
            return r.status

    statuses = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(10))), 60)
    assert statuses == [200] * 10
