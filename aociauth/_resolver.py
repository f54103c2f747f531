"""A DNS resolver for token requests that refuses names pointing where a realm must not.

The realm policy judges a realm by its text, so a challenge naming
``realm="https://metadata.attacker.example/"`` whose name resolves to
169.254.169.254 would pass it (go-containerregistry's literal-only guard has
this bypass, #2440). Token requests resolve through this resolver, which
judges every address a name resolves to with
:func:`aociauth._addresses.forbidden_address`, the rule the realm policy
applies to literals:

* cloud metadata, link-local, unspecified, multicast and reserved addresses
  are never a token server, in any spelling (IPv4-mapped, NAT64, 6to4, ...);
* loopback is one only when the registry itself is on this machine;
* private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) are
  allowed: a registry and its token server on a corporate network are the
  common case, and the realm policy has already judged the name.

A resolver built with a :class:`~aociauth._addresses.TrustDecision` judges by
that decision alone; give each decision its own connector
(:class:`aociauth._token_sessions.TokenSessions`), since a pooled connection
is never resolved again. Built without one, it reads the
:data:`loopback_allowed` context variable, which a pooled connection made
under another value bypasses.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from aociauth._addresses import TrustDecision, forbidden_address, parse_address

__all__ = ["RealmAddressError", "RealmGuardResolver", "loopback_allowed", "refused_address"]

#: Set by the middleware around a token request: whether the registry itself is
#: on this machine (then a loopback token server is its neighbour, not a target).
loopback_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "aociauth_loopback_allowed", default=False
)


class RealmAddressError(OSError):
    """A realm's name resolved to an address a token request must not go to."""

    def __init__(self, host: str, why: str):
        super().__init__(f"the realm host {host} resolves to {why}")
        self.host = host
        self.why = why


def refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, loopback_ok: bool) -> str:
    """Why a token request to a resolved name must not go to ``ip`` ("" when it may)."""
    return forbidden_address(ip, TrustDecision(loopback=loopback_ok, private=True))


class RealmGuardResolver(AbstractResolver):
    """Resolve with an inner resolver (aiohttp's default), then refuse forbidden addresses.

    ``trust`` fixes what is allowed; without it, :data:`loopback_allowed` is
    read at each resolution and private ranges are allowed.
    """

    def __init__(
        self, inner: AbstractResolver | None = None, *, trust: TrustDecision | None = None
    ) -> None:
        self._inner = inner if inner is not None else DefaultResolver()
        self._trust = trust

    @property
    def trust(self) -> TrustDecision | None:
        """The decision this resolver judges by; None when it reads the context variable."""
        return self._trust

    def _current_trust(self) -> TrustDecision:
        if self._trust is not None:
            return self._trust
        return TrustDecision(loopback=loopback_allowed.get(), private=True)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host``, or :class:`RealmAddressError`.

        A host the system resolver would read as an address (aiohttp passes
        ``0x7f.1`` here; ``getaddrinfo`` makes 127.0.0.1 of it) is judged as
        that address before any lookup, and every answer is judged after it.
        An answer that is not an address is refused, not skipped.
        """
        trust = self._current_trust()
        try:
            literal = parse_address(host)
        except ValueError:
            literal = None
        if literal is not None and (why := forbidden_address(literal, trust)):
            raise RealmAddressError(host, why)
        infos = await self._inner.resolve(host, port, family)
        for info in infos:
            try:
                ip = parse_address(str(info["host"]))
            except ValueError:
                ip = None
            if ip is None:
                raise RealmAddressError(host, "something that is not an IP address")
            why = forbidden_address(ip, trust)
            if why:
                raise RealmAddressError(host, why)
        return infos

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()

    def __repr__(self) -> str:
        return f"RealmGuardResolver({self._inner!r}, trust={self._trust!r})"
