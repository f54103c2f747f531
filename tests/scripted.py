"""Scripted loopback servers for middleware tests, in the style of the Go original's tests.

A target server whose gate decides each request, and an auth (token) server
whose function answers each token request; both are aiohttp TestServers on
127.0.0.1, recording what they received.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import aociauth
from aociauth import ConfigEntry, RequestInfo, Scope, parse_scope, with_request_info


def token_for(scope: Scope) -> str:
    """The Go tests' token: base64 of "token-" + the scope's string."""
    return base64.b64encode(f"token-{scope}".encode()).decode()


def scope_of(req: web.Request) -> Scope:
    auth = req.headers.getall("Authorization", [])
    assert len(auth) == 1, auth
    assert auth[0].startswith("Bearer ")
    raw = base64.b64decode(auth[0][len("Bearer ") :]).decode()
    assert raw.startswith("token-")
    return parse_scope(raw[len("token-") :])


class HTTPError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None, body: str = ""):
        self.status = status
        self.headers = headers or {}
        self.body = body


Gate = Callable[[web.Request], Awaitable[None]]
AuthFn = Callable[[web.Request, "Form"], Awaitable[dict[str, object]]]


@dataclass
class Form:
    """The token request's parameters, from the query (GET) or the form body (POST)."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str) -> str:
        v = self.values.get(key)
        return v[0] if v else ""

    def getall(self, key: str) -> list[str]:
        return self.values.get(key, [])


def bearer_challenge(realm: str, scope: object, service: str = "someService") -> dict[str, str]:
    """A Www-Authenticate header like the Go tests': unquoted service, quoted realm and scope."""
    return {"Www-Authenticate": f'Bearer realm="{realm}",service={service},scope="{scope}"'}


def repo_gate(get_realm: Callable[[], str], body: str = "", *, strict: bool = False) -> Gate:
    """A target that wants ``repository:<path after /test/>:pull`` in the bearer token.

    A request without the scope gets a 401 challenge; with ``strict`` (the Go tests'
    gates), a token without it fails the test instead.
    """

    async def gate(req: web.Request) -> None:
        resource = req.path.removeprefix("/test/")
        required = aociauth.new_scope(aociauth.ResourceScope("repository", resource, "pull"))
        if "Authorization" in req.headers and strict:
            assert scope_of(req).contains(required)
        elif "Authorization" not in req.headers or not scope_of(req).contains(required):
            raise HTTPError(401, bearer_challenge(get_realm(), required), body)

    return gate


async def echo_token(req: web.Request, form: Form) -> dict[str, object]:
    """A token server that grants whatever scope it is asked for."""
    return {"token": token_for(parse_scope(" ".join(form.getall("scope"))))}


def basic_of(req: web.Request) -> tuple[str, str] | None:
    h = req.headers.get("Authorization", "")
    if not h.startswith("Basic "):
        return None
    user, _, pw = base64.b64decode(h[6:]).decode().partition(":")
    return user, pw


class ConfigFunc:
    """A Config from a function of the host (the Go tests' configFunc)."""

    def __init__(self, f: Callable[[str], ConfigEntry]):
        self.f = f
        self.calls = 0

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        self.calls += 1
        return self.f(host)


@dataclass
class Servers:
    target: TestServer
    auth: TestServer | None
    target_hits: list[web.Request] = field(default_factory=list)
    auth_hits: list[tuple[web.Request, Form]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    def url(self, path: str) -> str:
        return str(self.target.make_url(path))

    @property
    def realm(self) -> str:
        assert self.auth is not None
        return str(self.auth.make_url("/token"))


async def start(gate: Gate, auth: AuthFn | None = None) -> Servers:
    servers: Servers

    async def target_handler(req: web.Request) -> web.StreamResponse:
        servers.target_hits.append(req)
        try:
            await gate(req)
        except HTTPError as e:
            return web.Response(status=e.status, headers=e.headers, text=e.body)
        if not (req.path == "/test" or req.path.startswith("/test/")):
            return web.Response(status=404, text="only /test is allowed")
        if req.method != "POST":
            return web.Response(status=405, text="only method POST is allowed")
        body = await req.read()
        if body != b"test body":
            return web.Response(status=403, text=f"wrong body {body!r}")
        return web.Response(text="test ok")

    async def auth_handler(req: web.Request) -> web.StreamResponse:
        form = Form()
        for k, v in req.query.items():
            form.values.setdefault(k, []).append(v)
        if req.method == "POST":
            for k, v in (await req.post()).items():
                form.values.setdefault(k, []).append(str(v))
        servers.auth_hits.append((req, form))
        assert auth is not None
        try:
            data = await auth(req, form)
        except HTTPError as e:
            return web.Response(status=e.status, headers=e.headers, text=e.body)
        return web.json_response(data)

    tapp = web.Application()
    tapp.router.add_route("*", "/{tail:.*}", target_handler)
    target = TestServer(tapp, host="127.0.0.1")
    await target.start_server()
    auth_srv = None
    if auth is not None:
        aapp = web.Application()
        aapp.router.add_route("*", "/{tail:.*}", auth_handler)
        auth_srv = TestServer(aapp, host="127.0.0.1")
        await auth_srv.start_server()
    servers = Servers(target, auth_srv)
    return servers


@pytest.fixture
async def stack() -> AsyncIterator[list[object]]:
    """Things to close at the end: servers, middlewares, sessions."""
    items: list[object] = []
    yield items
    for it in reversed(items):
        if isinstance(it, (aiohttp.ClientSession, aociauth.AuthMiddleware)):
            await it.close()
        elif isinstance(it, Servers):
            await it.target.close()
            if it.auth is not None:
                await it.auth.close()


async def client(stack: list[object], config: object, **kw: object) -> aiohttp.ClientSession:
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config, **kw))  # type: ignore[arg-type]
    session = aiohttp.ClientSession(middlewares=[mw])
    stack.extend([mw, session])
    return session


async def assert_request1(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, data=b"test body") as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.text() == "test ok"


async def assert_request(
    session: aiohttp.ClientSession, url: str, need: Scope | None = None
) -> None:
    """Like the Go helper: twice, with RequestInfo{RequiredScope: need}."""
    with with_request_info(RequestInfo(need or Scope())):
        await assert_request1(session, url)
        await assert_request1(session, url)


def creds_for(servers: Servers, entry: ConfigEntry) -> ConfigFunc:
    return ConfigFunc(lambda host: entry if host == servers.host else ConfigEntry())


TESTUSER = ConfigEntry(username="testuser", password="testpassword")
