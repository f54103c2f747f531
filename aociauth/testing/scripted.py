"""A loopback server that answers what the test says, recording every request.

The other servers of :mod:`aociauth.testing` behave like real registries and
token servers. A test about one odd answer (a challenge naming a strange
realm, a redirect to another host, a token endpoint that fails once) needs a
server whose every answer it writes itself: :class:`ScriptedServer` runs a
handler function, or answers a list of :class:`Reply` values in turn, and
keeps every request it received, headers and body included, as an
:class:`~aociauth.testing._http.Exchange`::

    async def registry(request: web.Request) -> web.StreamResponse:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async with ScriptedServer(registry) as reg:
        ...  # send a request to reg.url_for("/v2/")
        assert [e.status for e in reg.requests] == [401]

:func:`token_endpoint` turns a function of the token request's parameters
into the handler of a scripted token server.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from multidict import MultiDict

import aociauth
from aociauth.testing._http import Exchange, LoopbackServer, exchange_of, json_response

__all__ = [
    "ConfigFunc",
    "Handler",
    "Reply",
    "ScriptedServer",
    "TokenAnswer",
    "replies",
    "token_endpoint",
    "token_params",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""What a :class:`ScriptedServer` runs for each request: aiohttp's handler signature."""


@dataclass(frozen=True)
class Reply:
    """One answer of a scripted sequence: a status, headers and a body.

    A value rather than a ``web.Response``, because aiohttp sends a response
    object only once, and a sequence may repeat an answer.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str = b""

    def response(self) -> web.Response:
        """A fresh aiohttp response carrying this answer."""
        body = self.body.encode() if isinstance(self.body, str) else self.body
        return web.Response(status=self.status, headers=dict(self.headers), body=body)


def replies(*answers: Reply) -> Handler:
    """A handler answering ``answers`` in turn, one per request.

    A request after the last answer gets a 500 that says so, and the test's
    own assertions on what it received then fail: a client that asks more
    often than the script foresaw is noticed, not answered at random.
    """
    queue = list(answers)
    served = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal served
        served += 1
        if served > len(queue):
            text = f"scripted server: request {served} came after the last of {len(queue)} replies"
            return web.Response(status=500, text=text)
        return queue[served - 1].response()

    return handler


class ScriptedServer(LoopbackServer):
    """A loopback server running ``handler`` for every request, and recording each.

    ``handler`` is an aiohttp handler (it may also raise aiohttp's
    ``web.HTTPException``\\ s), or an iterable of :class:`Reply` answered in
    turn (see :func:`replies`). :attr:`requests` holds an
    :class:`~aociauth.testing._http.Exchange` per request, in arrival order,
    with the status it was answered; ``len(server.requests)`` is the count a
    test asserts on. Like every toolkit server it serves https with
    ``ssl_context``, shares a ``tap`` and holds requests with :meth:`pause`.
    """

    def __init__(
        self,
        handler: Handler | Iterable[Reply],
        *,
        ssl_context: ssl.SSLContext | None = None,
        tap: list[Exchange] | None = None,
    ) -> None:
        super().__init__(ssl_context=ssl_context, tap=tap)
        self.handler: Handler = handler if callable(handler) else replies(*handler)
        self.requests: list[Exchange] = []

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        exchange = await exchange_of(request)
        self.requests.append(exchange)
        self._arrive()
        await self._gate()
        try:
            response = await self.handler(request)
        except web.HTTPException as answer:
            exchange.status = answer.status
            raise
        exchange.status = response.status
        return response

    def reset(self) -> None:
        """Forget the requests received so far (and restart :meth:`wait_for_requests`' count)."""
        self.requests.clear()
        self._arrivals = 0

    def url_for(self, path: str = "", host: str | None = None) -> str:
        """The URL of ``path`` on this server, reached as ``host`` (default ``127.0.0.1``).

        With another name (``reg.test``), a client that resolves it to loopback
        (:class:`aociauth.testing.client.LoopbackResolver`) sees a host of that
        name: what origin and realm checks judge by.
        """
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host or '127.0.0.1'}:{self.port}{path}"


async def token_params(request: web.Request) -> MultiDict[str]:
    """A token request's parameters: the query, then (for a POST) the form body.

    Distribution's token endpoint takes ``GET`` with the parameters in the
    query and ``POST`` with them form-encoded (the OAuth2 grants); a scripted
    token server reads both the same way.
    """
    params: MultiDict[str] = MultiDict(request.query)
    if request.method == "POST":
        for key, value in (await request.post()).items():
            params.add(key, str(value))
    return params


TokenAnswer = Callable[[web.Request, MultiDict[str]], Awaitable[Mapping[str, object]]]
"""A scripted token endpoint: the request and its :func:`token_params` -> the JSON answer."""


def token_endpoint(answer: TokenAnswer) -> Handler:
    """A handler answering every request with ``answer``'s JSON object.

    ``answer`` gets the request and its :func:`token_params`; it may raise
    aiohttp's ``web.HTTPException`` (``web.HTTPUnauthorized()``) to refuse.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        return json_response(dict(await answer(request, await token_params(request))))

    return handler


class ConfigFunc:
    """A :class:`aociauth.Config` from a function of the registry host; counts its lookups.

    The Go original's tests' ``configFunc``: the quickest way to give a test's
    middleware credentials for one host and none for the others, and to see
    (:attr:`calls`) how often the middleware asked.
    """

    def __init__(self, entry_for: Callable[[str], aociauth.ConfigEntry]) -> None:
        self.entry_for = entry_for
        self.calls = 0

    async def entry_for_registry(self, host: str) -> aociauth.ConfigEntry:
        """``entry_for(host)``, counted."""
        self.calls += 1
        return self.entry_for(host)
