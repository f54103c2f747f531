"""ScriptedServer answers what the test wrote, records every request, and counts them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict

from aociauth import ConfigEntry
from aociauth.testing import Exchange, Reply, ScriptedServer
from aociauth.testing.scripted import ConfigFunc, replies, token_endpoint
from aociauth.testing.tls import TLSContexts


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kw: object
) -> tuple[int, str]:
    async with session.request(method, url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text()


async def test_a_handler_answers_and_every_request_is_recorded_with_its_status(
    session: aiohttp.ClientSession,
) -> None:
    async def registry(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return web.Response(text=f"hello {request.path}")

    async with ScriptedServer(registry) as reg:
        url = reg.url_for("/v2/a?x=1")
        assert await fetch(session, "GET", url) == (401, "")
        auth = {"Authorization": "Basic YTpi"}
        assert await fetch(session, "POST", url, headers=auth, data=b"body") == (200, "hello /v2/a")
    first, second = reg.requests
    assert (first.method, first.path, first.query, first.status) == ("GET", "/v2/a", "x=1", 401)
    assert first.header("Authorization") == []
    assert (second.method, second.body, second.status) == ("POST", b"body", 200)
    assert second.header("Authorization") == ["Basic YTpi"]
    assert second.host == "127.0.0.1"
    text = second.text()
    assert text.startswith("POST /v2/a?x=1\n")
    assert "Authorization: Basic YTpi" in text
    assert text.endswith("\n\nbody")
    with pytest.raises(RuntimeError, match="not running"):
        _ = reg.port


async def test_an_http_exception_a_handler_raises_is_the_answer_and_its_status_recorded(
    session: aiohttp.ClientSession,
) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async with (
        ScriptedServer(redirect) as reg,
        session.get(reg.url_for("/a"), allow_redirects=False) as resp,
    ):
        assert resp.status == 307
        assert resp.headers["Location"] == "/elsewhere"
    assert [e.status for e in reg.requests] == [307]


async def test_replies_are_answered_in_turn_and_a_request_past_the_last_gets_500(
    session: aiohttp.ClientSession,
) -> None:
    script = [
        Reply(401, {"WWW-Authenticate": "Basic"}),
        Reply(200, {"Content-Type": "text/plain"}, "ok"),
        Reply(200, body=b"again"),
    ]
    async with ScriptedServer(script) as reg:
        answers = [await fetch(session, "GET", reg.url_for("/")) for _ in range(4)]
    assert answers[:3] == [(401, ""), (200, "ok"), (200, "again")]
    assert answers[3][0] == 500
    assert "request 4 came after the last of 3 replies" in answers[3][1]
    assert len(reg.requests) == 4


async def test_the_same_reply_can_be_sent_twice() -> None:
    # A web.Response is sent once; a Reply makes a fresh one each time.
    handler = replies(Reply(204), Reply(204))
    async with ScriptedServer(handler) as reg, aiohttp.ClientSession() as session:
        for _ in range(2):
            assert (await fetch(session, "GET", reg.url_for("/")))[0] == 204


async def test_pause_holds_requests_until_the_test_has_counted_them(
    session: aiohttp.ClientSession,
) -> None:
    async with ScriptedServer([Reply(200)] * 3) as reg:
        reg.pause()
        gets = [asyncio.ensure_future(fetch(session, "GET", reg.url_for("/"))) for _ in range(3)]
        await reg.wait_for_requests(3)
        assert not any(g.done() for g in gets)
        reg.resume()
        assert [status for status, _ in await asyncio.gather(*gets)] == [200, 200, 200]
        reg.reset()
        assert reg.requests == []
        await fetch(session, "GET", reg.url_for("/"))
        await reg.wait_for_requests(1)


async def test_https_under_another_name_and_a_shared_tap(tls: TLSContexts) -> None:
    tap: list[Exchange] = []
    async with ScriptedServer([Reply(200)], ssl_context=tls.server, tap=tap) as reg:
        url = reg.url_for("/v2/", host="reg.test")
        assert url == f"https://reg.test:{reg.port}/v2/"
        # The throwaway certificate names 127.0.0.1 too, which this request uses.
        async with (
            aiohttp.ClientSession() as session,
            session.get(reg.url_for("/v2/"), ssl=tls.client) as resp,
        ):
            assert resp.status == 200
    assert [(e.path, e.status) for e in tap] == [("/v2/", 200)]
    assert [(e.path, e.status) for e in reg.requests] == [("/v2/", 200)]


async def test_token_endpoint_reads_get_and_post_parameters_alike(
    session: aiohttp.ClientSession,
) -> None:
    asked: list[MultiDict[str]] = []

    async def answer(request: web.Request, params: MultiDict[str]) -> dict[str, object]:
        asked.append(params)
        if params.get("grant_type") == "nope":
            raise web.HTTPUnauthorized()
        return {"token": "t", "scopes": params.getall("scope", [])}

    async with ScriptedServer(token_endpoint(answer)) as ts:
        url = ts.url_for("/token?service=s&scope=a&scope=b")
        async with session.get(url) as resp:
            assert await resp.json() == {"token": "t", "scopes": ["a", "b"]}
        form = {"grant_type": "password", "scope": "c"}
        async with session.post(ts.url_for("/token?service=s"), data=form) as resp:
            assert json.loads(await resp.text()) == {"token": "t", "scopes": ["c"]}
        async with session.post(ts.url_for("/token"), data={"grant_type": "nope"}) as resp:
            assert resp.status == 401
    assert [p.get("service") for p in asked] == ["s", "s", None]
    assert asked[1].get("grant_type") == "password"
    assert [e.status for e in ts.requests] == [200, 200, 401]


async def test_config_func_answers_by_host_and_counts_lookups() -> None:
    config = ConfigFunc(lambda host: ConfigEntry(username=host))
    assert await config.entry_for_registry("a.test") == ConfigEntry(username="a.test")
    assert await config.entry_for_registry("b.test") == ConfigEntry(username="b.test")
    assert config.calls == 2
