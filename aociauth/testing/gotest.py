"""The harness of the Go original's tests (ociauth's ``auth_test.go``), for tests ported from it.

cuelabs.dev/go/oci/ociregistry/ociauth tests its transport against two
``httptest`` servers: a target whose *gate* function decides each request,
and an auth server whose function answers each token request, with tokens
that are base64 of ``"token-" + scope`` so the target can read which scope a
token grants. :func:`start` runs the same pair as two
:class:`~aociauth.testing.scripted.ScriptedServer`\\ s on loopback, and the
helpers below are the Go tests' own (``assertRequest``, ``configFunc``, ...),
so a scenario reads as it does in Go::

    async def gate(req: web.Request) -> None:
        if basic_of(req) != ("testuser", "testpassword"):
            raise HTTPError(401, {"Www-Authenticate": "Basic"})

    async with await start(gate) as s:
        mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=creds_for(s, TESTUSER)))
        async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
            await assert_request(session, s.url("/test"))

Like Go's target, the target accepts only ``POST /test`` (or below) with the
body ``test body`` once its gate lets a request through.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType

import aiohttp
from aiohttp import web
from multidict import MultiDict

import aociauth
from aociauth.testing._http import Exchange, json_response
from aociauth.testing.scripted import ConfigFunc, ScriptedServer, token_params

__all__ = [
    "TESTUSER",
    "GoServers",
    "HTTPError",
    "TokenFunc",
    "assert_request",
    "assert_request_once",
    "basic_of",
    "bearer_challenge",
    "creds_for",
    "echo_token",
    "repo_gate",
    "scope_of",
    "start",
    "token_for",
]

TESTUSER = aociauth.ConfigEntry(username="testuser", password="testpassword")  # noqa: S106
"""The Go tests' user."""


class HTTPError(Exception):
    """Raised by a gate or a token function: answer ``status`` with ``headers`` and ``body``.

    The Go tests' ``httpError``. The harness catches it and answers; it never
    reaches the client.
    """

    def __init__(self, status: int, headers: Mapping[str, str] | None = None, body: str = ""):
        super().__init__(status)
        self.status = status
        self.headers = dict(headers or {})
        self.body = body

    def response(self) -> web.Response:
        """The answer this error stands for."""
        return web.Response(status=self.status, headers=self.headers, text=self.body)


Gate = Callable[[web.Request], Awaitable[None]]
"""Decides a target request: returns to let it through, raises :class:`HTTPError` to refuse."""

TokenFunc = Callable[[web.Request, MultiDict[str]], Awaitable[Mapping[str, object]]]
"""Answers a token request (its parameters: query and form) with the JSON object to send."""


def token_for(scope: aociauth.Scope) -> str:
    """The Go tests' token for ``scope``: base64 of ``"token-" + scope``."""
    return base64.b64encode(f"token-{scope}".encode()).decode()


def scope_of(req: web.Request) -> aociauth.Scope:
    """The scope of the one :func:`token_for` token ``req`` carries; AssertionError otherwise."""
    auth = req.headers.getall("Authorization", [])
    if len(auth) != 1 or not auth[0].startswith("Bearer "):
        raise AssertionError(f"want one bearer token, got {len(auth)} Authorization headers")
    raw = base64.b64decode(auth[0][len("Bearer ") :]).decode()
    if not raw.startswith("token-"):
        raise AssertionError("the bearer token is not one of token_for's")
    return aociauth.parse_scope(raw[len("token-") :])


def basic_of(req: web.Request) -> tuple[str, str] | None:
    """The user and password of ``req``'s Basic Authorization, or None."""
    header = req.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    return user, password


def bearer_challenge(realm: str, scope: object, service: str = "someService") -> dict[str, str]:
    """A Www-Authenticate header like the Go tests': unquoted service, quoted realm and scope."""
    return {"Www-Authenticate": f'Bearer realm="{realm}",service={service},scope="{scope}"'}


def repo_gate(get_realm: Callable[[], str], body: str = "", *, strict: bool = False) -> Gate:
    """A gate that wants ``repository:<path after /test/>:pull`` in the bearer token.

    A request without the scope gets a 401 challenge (with ``body``); with
    ``strict`` (the Go tests' gates), a token without it fails the test instead.
    """

    async def gate(req: web.Request) -> None:
        resource = req.path.removeprefix("/test/")
        required = aociauth.new_scope(aociauth.ResourceScope("repository", resource, "pull"))
        if "Authorization" in req.headers and strict:
            if not scope_of(req).contains(required):
                raise AssertionError(f"the token does not grant {required}")
        elif "Authorization" not in req.headers or not scope_of(req).contains(required):
            raise HTTPError(401, bearer_challenge(get_realm(), required), body)

    return gate


async def echo_token(req: web.Request, params: MultiDict[str]) -> Mapping[str, object]:
    """A token function granting whatever scope it is asked for."""
    return {"token": token_for(aociauth.parse_scope(" ".join(params.getall("scope", []))))}


class GoServers:
    """The Go tests' target and auth server, each a :class:`ScriptedServer` on loopback.

    :attr:`target_hits` and :attr:`auth_hits` are what each received.
    """

    def __init__(self, gate: Gate, token: TokenFunc | None = None) -> None:
        self.target = ScriptedServer(self._target(gate))
        self.auth = ScriptedServer(self._token(token)) if token is not None else None

    @staticmethod
    def _target(gate: Gate) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(req: web.Request) -> web.StreamResponse:
            try:
                await gate(req)
            except HTTPError as refused:
                return refused.response()
            if not (req.path == "/test" or req.path.startswith("/test/")):
                return web.Response(status=404, text="only /test is allowed")
            if req.method != "POST":
                return web.Response(status=405, text="only method POST is allowed")
            body = await req.read()
            if body != b"test body":
                return web.Response(status=403, text=f"wrong body {body!r}")
            return web.Response(text="test ok")

        return handler

    @staticmethod
    def _token(token: TokenFunc) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(req: web.Request) -> web.StreamResponse:
            try:
                answer = await token(req, await token_params(req))
            except HTTPError as refused:
                return refused.response()
            return json_response(dict(answer))

        return handler

    @property
    def target_hits(self) -> list[Exchange]:
        """Every request the target received."""
        return self.target.requests

    @property
    def auth_hits(self) -> list[Exchange]:
        """Every request the auth server received (none without one)."""
        return self.auth.requests if self.auth is not None else []

    @property
    def host(self) -> str:
        """The target's ``127.0.0.1:PORT``: the registry host a config names."""
        return self.target.host

    def url(self, path: str) -> str:
        """The target's URL of ``path``."""
        return self.target.url_for(path)

    @property
    def realm(self) -> str:
        """The auth server's token endpoint, for a challenge's realm."""
        if self.auth is None:
            raise RuntimeError("these GoServers have no auth server")
        return self.auth.url_for("/token")

    async def start(self) -> None:
        """Start both servers."""
        await self.target.start()
        if self.auth is not None:
            await self.auth.start()

    async def stop(self) -> None:
        """Stop both servers."""
        await self.target.stop()
        if self.auth is not None:
            await self.auth.stop()

    async def __aenter__(self) -> GoServers:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def start(gate: Gate, token: TokenFunc | None = None) -> GoServers:
    """Start a target deciding by ``gate`` and, with ``token``, an auth server answering by it.

    The result is started: stop it with :meth:`GoServers.stop` or ``async with``.
    """
    servers = GoServers(gate, token)
    await servers.start()
    return servers


def creds_for(servers: GoServers, entry: aociauth.ConfigEntry) -> ConfigFunc:
    """A config giving ``entry`` for the target's host and nothing for any other."""
    return ConfigFunc(lambda host: entry if host == servers.host else aociauth.ConfigEntry())


async def assert_request_once(session: aiohttp.ClientSession, url: str) -> None:
    """POST ``test body`` to ``url``: it must answer 200 ``test ok``."""
    async with session.post(url, data=b"test body") as resp:
        text = await resp.text()
        if resp.status != 200 or text != "test ok":
            raise AssertionError(f"POST {url}: {resp.status} {text!r}")


async def assert_request(
    session: aiohttp.ClientSession, url: str, need: aociauth.Scope | None = None
) -> None:
    """Like the Go tests' ``assertRequest``: twice, with ``RequestInfo{RequiredScope: need}``."""
    with aociauth.with_request_info(aociauth.RequestInfo(need or aociauth.Scope())):
        await assert_request_once(session, url)
        await assert_request_once(session, url)
