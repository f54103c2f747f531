"""One test, both adapters: a client through the aiohttp middleware or the httpx auth, alike.

aociauth drives one auth core from two HTTP clients (:mod:`aociauth.middleware`
for aiohttp, :mod:`aociauth.httpx` for httpx, on asyncio or trio). A test of
behaviour that must not depend on the client runs once per adapter
(:data:`ADAPTERS`) through a :class:`Harness`, which starts the toolkit's
servers and makes an :class:`AdapterClient` whose ``get`` answers the same
:class:`Answer` either way::

    @pytest.mark.parametrize("adapter", ADAPTERS)
    async def test_one_token_request(adapter):
        harness = Harness(adapter)
        try:
            ts = await harness.serve(TokenServer(users={"alice": "pw"}))
            reg = await harness.serve(Registry(auth="bearer", token_server=ts))
            ...
            async with harness.client(params) as client:
                answer = await client.get(url)
        finally:
            await harness.stop()

The toolkit's servers are aiohttp applications, which need an asyncio loop.
For httpx on trio, give the harness a portal to an asyncio loop in a thread
of its own (``anyio.from_thread.start_blocking_portal("asyncio")``): the
servers start and stop there while the test runs on trio.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import aiohttp

import aociauth
from aociauth.stats import AuthStats
from aociauth.testing._http import LoopbackServer

if TYPE_CHECKING:
    import anyio.from_thread
    import httpx

    from aociauth.httpx import RegistryAuth

__all__ = ["ADAPTERS", "Adapter", "AdapterClient", "Answer", "Harness"]

Adapter = Literal["aiohttp", "httpx"]
"""Which HTTP client a :class:`Harness` drives the auth core from."""

ADAPTERS: tuple[Adapter, ...] = ("aiohttp", "httpx")
"""Every adapter, to parametrize a test over."""

_S = TypeVar("_S", bound=LoopbackServer)

# Room for a burst of a thousand requests: httpx's pool waits 5 s by default.
_HTTPX_TIMEOUT = 120.0


@dataclass(frozen=True)
class Answer:
    """What a caller got: the status and body, and the Authorization its request shows after."""

    status: int
    body: bytes
    authorization: str | None


class AdapterClient(Protocol):
    """A client through one adapter: GET a URL, and the adapter's :class:`~aociauth.AuthStats`."""

    stats: AuthStats

    async def get(self, url: str, headers: dict[str, str] | None = None) -> Answer:
        """GET ``url`` through the adapter."""


class _AiohttpClient:
    def __init__(self, session: aiohttp.ClientSession, mw: aociauth.AuthMiddleware, follow: bool):
        self._session, self.stats, self._follow = session, mw.stats, follow

    async def get(self, url: str, headers: dict[str, str] | None = None) -> Answer:
        async with self._session.get(url, headers=headers, allow_redirects=self._follow) as r:
            body = await r.read()
            return Answer(r.status, body, r.request_info.headers.get("Authorization"))


class _HttpxClient:
    def __init__(self, client: httpx.AsyncClient, auth: RegistryAuth):
        self._client, self.stats = client, auth.stats

    async def get(self, url: str, headers: dict[str, str] | None = None) -> Answer:
        r = await self._client.get(url, headers=headers)
        return Answer(r.status_code, r.content, r.request.headers.get("Authorization"))


@dataclass
class Harness:
    """Where a test's servers run, and how a client through :attr:`adapter` is made.

    ``portal`` runs the servers on a portal's asyncio loop (for a test on
    trio); None runs them on the test's own loop. :meth:`stop` stops every
    server :meth:`serve` started, last first.
    """

    adapter: Adapter
    portal: anyio.from_thread.BlockingPortal | None = None
    _servers: list[LoopbackServer] = field(default_factory=list)

    async def _run(self, fn: Callable[[], Awaitable[None]]) -> None:
        if self.portal is None:
            await fn()
        else:
            import anyio.to_thread

            await anyio.to_thread.run_sync(self.portal.call, fn)

    async def serve(self, server: _S) -> _S:
        """Start ``server`` (where the harness runs servers) and return it."""
        await self._run(server.start)
        self._servers.append(server)
        return server

    async def stop(self) -> None:
        """Stop every server started, last first."""
        for server in reversed(self._servers):
            await self._run(server.stop)
        self._servers.clear()

    @contextlib.asynccontextmanager
    async def client(
        self, params: aociauth.StdTransportParams, *, follow_redirects: bool = False
    ) -> AsyncIterator[AdapterClient]:
        """A client for ``params`` through the adapter; closed, with its auth, on the way out."""
        if self.adapter == "aiohttp":
            async with (
                aociauth.new_std_transport(params) as mw,
                aiohttp.ClientSession(middlewares=[mw]) as session,
            ):
                yield _AiohttpClient(session, mw, follow_redirects)
            return
        import httpx

        from aociauth.httpx import RegistryAuth

        async with (
            RegistryAuth(params) as auth,
            httpx.AsyncClient(
                auth=auth,
                follow_redirects=follow_redirects,
                # No bound on the wait for a pooled connection: a burst of 1,000 on a
                # slow machine queues for its 100 connections longer than any per-call
                # bound would allow, while every call's own I/O stays bounded.
                timeout=httpx.Timeout(_HTTPX_TIMEOUT, pool=None),
            ) as client,
        ):
            yield _HttpxClient(client, auth)
