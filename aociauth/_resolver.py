"""A DNS resolver for token requests that refuses names pointing where a realm must not.

The realm policy judges a realm by its text, so a challenge naming
``realm="https://metadata.attacker.example/"`` whose name resolves to
169.254.169.254 would pass it (go-containerregistry's literal-only guard has
this bypass, #2440). The middleware's own token session resolves through this
resolver, which looks at the addresses a name resolves to:

* link-local (cloud metadata endpoints live there), unspecified, multicast and
  reserved addresses are never a token server;
* loopback is one only when the registry itself is on this machine;
* private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are allowed: a
  registry and its token server on a corporate network are the common case,
  and the realm policy has already judged the name.

``RealmPolicy(allow_private_realms=True)`` turns the check off.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

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
    """Why a token request must not go to ``ip`` ("" when it may)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "" if loopback_ok else "a loopback address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast or ip.is_reserved:
        return "a multicast or reserved address"
    return ""


class RealmGuardResolver(AbstractResolver):
    """Resolve with aiohttp's default resolver, then refuse forbidden addresses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host``, or :class:`RealmAddressError`."""
        infos = await self._inner.resolve(host, port, family)
        loopback_ok = loopback_allowed.get()
        for info in infos:
            try:
                ip = ipaddress.ip_address(info["host"])
            except ValueError:
                continue
            why = refused_address(ip, loopback_ok=loopback_ok)
            if why:
                raise RealmAddressError(host, why)
        return infos

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()

    def __repr__(self) -> str:
        return f"RealmGuardResolver({self._inner!r})"
