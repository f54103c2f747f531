"""The client side of a test: a session through the middleware that reaches every name on loopback.

The toolkit's servers all listen on ``127.0.0.1``. Origin and realm checks
judge by host *names* (``reg.test`` and ``auth.test`` are two hosts, even on
one address), so a test about them needs a client that reaches any name on
loopback: :class:`LoopbackResolver` resolves every name to ``127.0.0.1``
without asking DNS, and :func:`loopback_client` builds the middleware and a
session through it that both use it::

    async with loopback_client(config) as (mw, session):
        async with session.get(reg.url_for("/v2/", host="reg.test")) as resp:
            ...
        assert mw.stats.total_token_requests == 1
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

import aociauth

__all__ = ["LoopbackResolver", "TableResolver", "loopback_client", "loopback_connector"]


class LoopbackResolver(AbstractResolver):
    """Resolves every name to 127.0.0.1, and lists the names it was asked (:attr:`asked`).

    ``localhost`` included: a session using it never touches ``::1`` or DNS,
    so nothing a test sends can leave the machine.
    """

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """127.0.0.1 and ``port``, whatever ``host`` is."""
        self.asked.append(host)
        return [numeric_answer(host, "127.0.0.1", port)]

    async def close(self) -> None:
        """Nothing to release."""


def numeric_answer(name: str, address: str, port: int) -> ResolveResult:
    """What a resolver answers for ``name``: the literal ``address`` (IPv4 or IPv6)
    with ``port``, as aiohttp's connector expects it."""
    return ResolveResult(
        hostname=name,
        host=address,
        port=port,
        family=socket.AF_INET6 if ":" in address else socket.AF_INET,
        proto=0,
        flags=socket.AI_NUMERICHOST,
    )


class TableResolver(AbstractResolver):
    """Resolves the names of a table to the addresses it lists; any other name does not exist.

    ``table`` maps a name to one address or a list of them, IPv4 or IPv6,
    written as a DNS answer would carry them (``"169.254.169.254"``,
    ``"::ffff:10.0.0.1"``): for testing what code does with the addresses a
    name resolves to, without DNS. A name not in the table raises the
    :class:`OSError` an unknown name gives. :attr:`asked` lists every name
    looked up, unknown ones included.
    """

    def __init__(self, table: Mapping[str, str | Sequence[str]]) -> None:
        self.table = {
            name: (addresses,) if isinstance(addresses, str) else tuple(addresses)
            for name, addresses in table.items()
        }
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The table's addresses for ``host``, each with ``port``."""
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such test name {host}")
        return [numeric_answer(host, address, port) for address in self.table[host]]

    async def close(self) -> None:
        """Nothing to release."""


def loopback_connector(ssl_context: ssl.SSLContext | None = None) -> aiohttp.TCPConnector:
    """A connector reaching every name on 127.0.0.1, trusting ``ssl_context``'s CAs if given."""
    return aiohttp.TCPConnector(
        resolver=LoopbackResolver(), ssl=ssl_context if ssl_context is not None else True
    )


@contextlib.asynccontextmanager
async def loopback_client(
    config: aociauth.Config | None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    session_kw: Mapping[str, Any] | None = None,
    resolve_names: bool = True,
    **params: Any,
) -> AsyncIterator[tuple[aociauth.AuthMiddleware, aiohttp.ClientSession]]:
    """A middleware for ``config`` and a session through it, both reaching names on loopback.

    ``params`` are :class:`aociauth.StdTransportParams` fields; ``session_kw``
    goes to the :class:`aiohttp.ClientSession`. The middleware's token
    requests go through a session of their own that also resolves names to
    loopback. ``ssl_context`` is a client context (e.g.
    :attr:`aociauth.testing.tls.TLSContexts.client`) both sessions trust.

    With ``resolve_names=False`` names resolve as usual and the middleware
    makes its token session itself, as in production (with the guard that
    keeps realms off internal addresses, and the system's CAs only): for
    tests that reach servers by ``127.0.0.1``. Everything made here is
    closed on the way out.
    """
    token_session = (
        aiohttp.ClientSession(connector=loopback_connector(ssl_context)) if resolve_names else None
    )
    mw = aociauth.new_std_transport(
        aociauth.StdTransportParams(config=config, session=token_session, **params)
    )
    if resolve_names:
        connector: aiohttp.TCPConnector | None = loopback_connector(ssl_context)
    else:
        connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    session = aiohttp.ClientSession(middlewares=[mw], connector=connector, **(session_kw or {}))
    try:
        yield mw, session
    finally:
        await session.close()
        await mw.close()
        if token_session is not None:
            await token_session.close()
