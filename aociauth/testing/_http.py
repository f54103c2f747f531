"""Running an aiohttp.web application on a free loopback port, and owning it."""

from __future__ import annotations

import abc
import asyncio
import json
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDict

__all__ = ["Exchange", "LoopbackServer", "exchange_of", "json_response"]

_S = TypeVar("_S", bound="LoopbackServer")

# A stalled handler waits on the server's closing event, so a stop never
# needs this long; it only bounds a handler that is stuck elsewhere.
_SHUTDOWN_TIMEOUT = 2.0


def json_response(
    payload: Any,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json; charset=utf-8",
) -> web.Response:
    """Return ``payload`` as compact JSON ending in a newline, as Go's json.Encoder writes it."""
    body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    response = web.Response(body=body, status=status, headers=headers)
    response.headers["Content-Type"] = content_type
    return response


@dataclass
class Exchange:
    """One request a server received and the status it answered, everything included.

    Recorded in a server's :attr:`~LoopbackServer.tap` list, when it has one:
    the raw headers and body, so that an audit can look for credentials where
    they must not be. ``host`` is the request's Host header without its port:
    the name the client thought it was talking to. Headers and body are left
    out of the repr, so that a failing test does not print them.
    """

    host: str
    method: str
    path: str
    query: str
    headers: CIMultiDict[str] = field(repr=False)
    body: bytes = field(repr=False)
    status: int = 0

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` the request carried, in order (``[]`` if none)."""
        return self.headers.getall(name, [])

    def text(self) -> str:
        """The whole request as one string: request line, headers and body.

        For searching a request for a secret (``canary in exchange.text()``);
        the body is decoded as latin-1, so every byte keeps its place.
        """
        heads = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        line = f"{self.method} {self.path}?{self.query}"
        return f"{line}\n{heads}\n\n" + self.body.decode("latin-1")


_TAPPED_BODY_LIMIT = 1 << 20


def _host_name(host: str) -> str:
    """A Host header without its port (``[::1]:80`` -> ``[::1]``)."""
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and not name.endswith(":") else host


async def exchange_of(request: web.Request) -> Exchange:
    """An :class:`Exchange` for ``request`` (status 0 until the answer is known).

    Reading the body caches it, so the handler's own ``read()`` or ``post()``
    still sees it.
    """
    body = await request.read() if request.can_read_body else b""
    return Exchange(
        host=_host_name(request.host),
        method=request.method,
        path=request.path,
        query=request.query_string,
        headers=CIMultiDict(request.headers),
        body=body[:_TAPPED_BODY_LIMIT],
    )


class LoopbackServer(abc.ABC):
    """Base of the in-process servers: starts on ``127.0.0.1`` on a free port.

    Subclasses build their application in :meth:`_make_app`, call
    :meth:`_arrive` when a request comes in and then await :meth:`_gate`.
    Use it as an async context manager, or call :meth:`start` and
    :meth:`stop`. While it stops, :attr:`_closing` is set, so a handler that
    stalls on purpose can wait on it and end with the server.

    ``ssl_context`` (a server context, e.g. from :func:`aociauth.testing.tls.make_tls`)
    serves https instead of http. ``tap``, a list shared by several servers if
    wished, receives an :class:`Exchange` for every request, in arrival order.
    """

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, tap: list[Exchange] | None = None
    ) -> None:
        self.ssl_context = ssl_context
        self.tap = tap
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()
        self._arrived = asyncio.Event()
        self._arrivals = 0

    @abc.abstractmethod
    def _make_app(self) -> web.Application:
        """The aiohttp application the server runs (each server builds its own)."""

    def _arrive(self) -> None:
        self._arrivals += 1
        self._arrived.set()

    async def _gate(self) -> None:
        await self._open.wait()

    def pause(self) -> None:
        """Hold every request (after it is counted) until :meth:`resume`."""
        self._open.clear()

    def resume(self) -> None:
        """Let held requests go on."""
        self._open.set()

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` requests have arrived since the counters were (re)set.

        With :meth:`pause`, this lets a test line up concurrent requests and
        count them, without relying on timing. ``timeout`` only bounds a test
        that went wrong.
        """

        async def arrived() -> None:
            while self._arrivals < n:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(arrived(), timeout)

    @property
    def port(self) -> int:
        """The TCP port the server listens on (only while it runs)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the host part of :attr:`url`, as a registry host key."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (https with TLS), without a trailing slash."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}"

    @property
    def running(self) -> bool:
        """Whether the server is started and not yet stopped."""
        return self._runner is not None

    async def start(self) -> None:
        """Bind a free loopback port and start serving."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._closing = asyncio.Event()
        app = self._make_app()
        if self.tap is not None:
            app.middlewares.append(self._record_exchange)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self._port = sock.getsockname()[1]
            await web.SockSite(runner, sock, ssl_context=self.ssl_context).start()
        except BaseException:
            sock.close()
            self._port = None
            await runner.cleanup()
            raise
        self._runner = runner

    @web.middleware
    async def _record_exchange(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        exchange = await exchange_of(request)
        if self.tap is not None:
            self.tap.append(exchange)
        response = await handler(request)
        exchange.status = response.status
        return response

    async def stop(self) -> None:
        """Stop serving and close every connection; calling it again does nothing."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        self._open.set()
        try:
            await runner.cleanup()
        finally:
            self._port = None

    async def __aenter__(self: _S) -> _S:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
