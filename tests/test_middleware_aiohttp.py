"""The aiohttp facts the middleware is designed around (research: aiohttp-mw.md).

Bodies are replayed after a 401 only when aiohttp can replay them; a streaming
body gets a clear error instead of being resent empty. Token requests may go
through the caller's own session without running the middleware again.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth import ConfigEntry
from aociauth.testing.gotest import HTTPError, bearer_challenge, echo_token, start
from aociauth.testing.pytest_plugin import ClientFactory
from aociauth.testing.scripted import ConfigFunc


def body_gate(bodies: list[bytes], get_realm: object) -> object:
    async def gate(req: web.Request) -> None:
        bodies.append(await req.read())
        if "Authorization" not in req.headers:
            raise HTTPError(
                401,
                bearer_challenge(get_realm(), "repository:foo:pull,push"),  # type: ignore[operator]
            )

    return gate


@pytest.mark.parametrize(
    "make_body",
    [
        lambda: b"test body",
        lambda: "test body",
        lambda: io.BytesIO(b"test body"),
    ],
    ids=["bytes", "str", "bytesio"],
)
async def test_replayable_bodies_are_sent_again_intact(
    stack: list[object], oci_client: ClientFactory, make_body: object
) -> None:
    bodies: list[bytes] = []
    s = await start(body_gate(bodies, lambda: s.realm), echo_token)  # type: ignore[arg-type]
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda h: ConfigEntry()))
    async with session.put(s.url("/test"), data=make_body()) as r:  # type: ignore[operator]
        assert r.status == 405  # the target only accepts POST, after auth: the body went twice
    assert bodies == [b"test body", b"test body"]


async def test_a_streaming_body_is_not_resent_empty(stack: list[object]) -> None:
    bodies: list[bytes] = []
    s = await start(body_gate(bodies, lambda: s.realm), echo_token)  # type: ignore[arg-type]
    stack.append(s)
    connector = aiohttp.TCPConnector(limit=1)
    mw = aociauth.new_std_transport(
        aociauth.StdTransportParams(config=ConfigFunc(lambda h: ConfigEntry()))
    )
    session = aiohttp.ClientSession(middlewares=[mw], connector=connector)
    stack.extend([mw, session])

    async def stream() -> AsyncIterator[bytes]:
        yield b"test "
        yield b"body"

    with pytest.raises(aociauth.BodyNotReplayableError) as ei:
        await session.post(s.url("/test"), data=stream())
    err = ei.value
    assert err.status == 401
    assert isinstance(err, aiohttp.ClientError)
    assert "authorise first" in str(err)
    assert bodies == [b"test body"]  # sent once, never an empty second time
    assert len(s.auth_hits) == 0  # no token fetched for a request that cannot be resent
    # The 401 was released: the one-connection pool still works.
    async with session.post(s.url("/test"), data=b"test body") as r:
        assert r.status == 200


async def test_token_requests_through_the_callers_own_session_do_not_recurse(
    stack: list[object],
) -> None:
    bodies: list[bytes] = []
    s = await start(body_gate(bodies, lambda: s.realm), echo_token)  # type: ignore[arg-type]
    stack.append(s)
    mw = aociauth.new_std_transport(
        aociauth.StdTransportParams(config=ConfigFunc(lambda h: ConfigEntry()))
    )
    session = aiohttp.ClientSession(middlewares=[mw])
    # The same session that carries the middleware also carries its token requests.
    mw2 = aociauth.new_std_transport(
        aociauth.StdTransportParams(config=ConfigFunc(lambda h: ConfigEntry()), session=session)
    )
    session2 = aiohttp.ClientSession(middlewares=[mw2])
    stack.extend([mw, mw2, session, session2])
    async with session2.post(s.url("/test"), data=b"test body") as r:
        assert r.status == 200
    assert len(s.auth_hits) == 1
    assert mw.stats.requests == 0  # the token request did not run session's middleware
    assert mw2.stats.requests == 1
    assert not session.closed  # a session the caller gave is the caller's to close
    await mw2.close()
    assert not session.closed
