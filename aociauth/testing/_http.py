"""Running an aiohttp.web application on a free loopback port, and owning it."""

from __future__ import annotations

import abc
import asyncio
import json
import socket
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

__all__ = ["LoopbackServer", "json_response"]

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


class LoopbackServer(abc.ABC):
    """Base of the in-process servers: starts on ``127.0.0.1`` on a free port.

    Subclasses build their application in :meth:`_make_app`, call
    :meth:`_arrive` when a request comes in and then await :meth:`_gate`.
    Use it as an async context manager, or call :meth:`start` and
    :meth:`stop`. While it stops, :attr:`_closing` is set, so a handler that
    stalls on purpose can wait on it and end with the server.
    """

    def __init__(self) -> None:
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
        """The base URL, ``http://127.0.0.1:PORT``, without a trailing slash."""
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        """Whether the server is started and not yet stopped."""
        return self._runner is not None

    async def start(self) -> None:
        """Bind a free loopback port and start serving."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._closing = asyncio.Event()
        runner = web.AppRunner(
            self._make_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self._port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            self._port = None
            await runner.cleanup()
            raise
        self._runner = runner

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
