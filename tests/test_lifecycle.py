"""Issue 10, item 6: what closing the middleware (or the httpx auth) does to requests.

Closing while requests wait on one shared token fetch ends every one of them with
:class:`aociauth.AuthRequestError` (step ``"closed"``, an ``aiohttp.ClientError``), never a
``CancelledError`` in a task nobody cancelled, and leaves no "Task exception was never
retrieved" behind. After close, a request fails before anything is sent: the registry
sees nothing, no token request goes out, no credential helper runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest

import aociauth
from aociauth.httpx import RegistryAuth
from aociauth.testing.credhelper import HelperAnswer, install_credential_helper
from aociauth.testing.leaks import PASSWORD, assert_clean, exception_texts
from aociauth.testing.registry import Registry
from aociauth.testing.tokenserver import TokenServer

ALICE = {"alice": PASSWORD}
WAITERS = 50


@pytest.fixture
async def servers() -> AsyncIterator[tuple[TokenServer, Registry]]:
    async with TokenServer(users=ALICE) as ts, Registry(auth="bearer", token_server=ts) as reg:
        reg.seed_image("team/app", "v1")
        yield ts, reg


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="aociauth")
    caplog.set_level(logging.DEBUG, logger="asyncio")
    return caplog


def password_config(reg: Registry) -> aociauth.ConfigFile:
    return aociauth.ConfigFile.from_dict(
        {"auths": {reg.host: {"username": "alice", "password": PASSWORD}}}
    )


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No secret in any record, and asyncio reported no orphaned task exception."""
    for record in caplog.records:
        assert_clean(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            assert_clean(exception_texts(record.exc_info[1]))
        if record.name == "asyncio":
            assert "never retrieved" not in record.getMessage(), record.getMessage()


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def test_close_ends_every_waiter_on_a_shared_fetch_with_our_error(
    servers: tuple[TokenServer, Registry], debug_log: pytest.LogCaptureFixture
) -> None:
    ts, reg = servers
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=password_config(reg)))
    url = f"{reg.url}/v2/team/app/manifests/v1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with aiohttp.ClientSession(middlewares=[mw]) as session:
            ts.pause()
            tasks = [asyncio.ensure_future(_get(session, url)) for _ in range(WAITERS)]
            await ts.wait_for_requests(1)
            # Let every request reach its wait on the token request in flight.
            for _ in range(20):
                await asyncio.sleep(0)
            assert not any(t.done() for t in tasks)
            await asyncio.wait_for(mw.close(), 10)
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
            ts.resume()
        gc.collect()
    for r in results:
        assert isinstance(r, aociauth.AuthRequestError), repr(r)
        assert isinstance(r, aiohttp.ClientError)
        assert r.step == "closed"
        assert_clean(exception_texts(r))
    # One shared token request, not one per waiter, and no token ever reached the registry.
    assert ts.counters.requests == 1
    assert reg.counters.bearer == 0
    assert_quiet(debug_log)


async def test_a_request_after_close_sends_nothing_anywhere(
    servers: tuple[TokenServer, Registry], debug_log: pytest.LogCaptureFixture
) -> None:
    ts, reg = servers
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=password_config(reg)))
    url = f"{reg.url}/v2/team/app/manifests/v1"
    async with aiohttp.ClientSession(middlewares=[mw]) as session:
        # Twice: the second, served by the cached token, is remembered by the core,
        # and a remembered request must not slip past the close either.
        for _ in range(2):
            await _get(session, url)
        assert reg.counters.bearer == 2
        used = (reg.counters.requests, ts.counters.requests)
        await mw.close()
        for target in (url, f"{reg.url}/v2/other/manifests/v1"):
            with pytest.raises(aociauth.AuthRequestError) as info:
                await _get(session, target)
            assert info.value.step == "closed"
            assert isinstance(info.value, aiohttp.ClientError)
            assert_clean(exception_texts(info.value))
    assert (reg.counters.requests, ts.counters.requests) == used
    # Closing twice is harmless.
    await mw.close()
    assert_quiet(debug_log)


async def test_a_closed_middleware_runs_no_helper_and_opens_no_token_session(
    tmp_path: Path, servers: tuple[TokenServer, Registry], debug_log: pytest.LogCaptureFixture
) -> None:
    ts, reg = servers
    helper = install_credential_helper(tmp_path, {"reg.test": HelperAnswer("alice", PASSWORD)})
    # The helper answers alice/PASSWORD for reg.test; here it is asked about 127.0.0.1.
    config = helper.config({reg.host: helper.name})
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config))
    await mw.close()
    async with aiohttp.ClientSession(middlewares=[mw]) as session:
        with pytest.raises(aociauth.AuthRequestError) as info:
            await _get(session, f"{reg.url}/v2/team/app/manifests/v1")
    assert info.value.step == "closed"
    assert helper.runs() == []
    assert reg.counters.requests == 0
    assert ts.counters.requests == 0
    assert_quiet(debug_log)


async def test_httpx_auth_after_aclose_sends_nothing(
    tmp_path: Path, servers: tuple[TokenServer, Registry], debug_log: pytest.LogCaptureFixture
) -> None:
    ts, reg = servers
    helper = install_credential_helper(tmp_path, {"reg.test": HelperAnswer("alice", PASSWORD)})
    auth = RegistryAuth(aociauth.StdTransportParams(config=helper.config({reg.host: helper.name})))
    await auth.aclose()
    async with httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(aociauth.AuthRequestError) as info:
            await client.get(f"{reg.url}/v2/team/app/manifests/v1")
    assert info.value.step == "closed"
    assert helper.runs() == []
    assert reg.counters.requests == 0
    assert ts.counters.requests == 0
    assert_quiet(debug_log)


async def test_httpx_aclose_ends_waiters_on_a_shared_fetch(
    servers: tuple[TokenServer, Registry], debug_log: pytest.LogCaptureFixture
) -> None:
    ts, reg = servers
    auth = RegistryAuth(aociauth.StdTransportParams(config=password_config(reg)))
    url = f"{reg.url}/v2/team/app/manifests/v1"
    async with httpx.AsyncClient(auth=auth) as client:
        ts.pause()
        tasks = [asyncio.ensure_future(client.get(url)) for _ in range(10)]
        await ts.wait_for_requests(1)
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.wait_for(auth.aclose(), 10)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        ts.resume()
    for r in results:
        assert isinstance(r, aociauth.AuthRequestError), repr(r)
        assert r.step == "closed"
    assert reg.counters.bearer == 0
    assert_quiet(debug_log)
