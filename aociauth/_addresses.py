"""Which IP addresses a token request may connect to: one rule for every spelling.

A realm's host reaches a socket in one of two ways: as a literal in the realm
(judged by :func:`aociauth.realm.check_realm`) or as a name the system
resolver turns into addresses (judged by
:class:`aociauth._resolver.RealmGuardResolver` at connect time). Both ask
:func:`forbidden_address`, so an address refused in one form is refused in
every other:

* an IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``,
  IPv4-translated ``::ffff:0:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, 6to4
  ``2002::/16``, Teredo ``2001::/32``, NAT64 ``64:ff9b::/96`` and
  ``64:ff9b:1::/48``) is judged by what it carries as well as by itself: the
  host's translator or tunnel delivers it there (go-containerregistry#2284
  and #2440 are bypasses of guards that looked at the outer form only);
* a host written as ``inet_aton`` reads it (``2130706433``, ``0177.0.0.1``,
  ``0x7f.1``, ``127.1``) is judged as the address the system resolver makes of
  it (:func:`parse_inet_aton`); aiohttp refuses the all-digit forms itself but
  hands ``0x7f.1`` to the resolver, whose ``getaddrinfo`` answers 127.0.0.1;
* cloud metadata services (169.254.169.254, AWS's ``fd00:ec2::254``, GCE's
  ``fd20:ce::254``, Alibaba's 100.100.100.200 inside the shared address space
  100.64.0.0/10, Azure's 168.63.129.16) are never a token server.

The tables are written out rather than read from ``ipaddress``'s
``is_private``/``is_global``, whose answers changed between Python releases
(3.11 calls ``fec0::/10`` and ``64:ff9b:1::/48`` global); anything else those
flags call non-global is refused as reserved.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "AddressKind",
    "IPAddress",
    "TrustDecision",
    "classify_address",
    "embedded_ipv4",
    "folded_host_name",
    "forbidden_address",
    "is_localhost_name",
    "on_this_machine",
    "parse_address",
    "parse_host",
    "parse_inet_aton",
]

IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"


class AddressKind(enum.Enum):
    """What an address is, from worst (never a token server) to public.

    The value is the phrase messages use.
    """

    UNSPECIFIED = "the unspecified address"
    METADATA = "a link-local or cloud metadata address"
    LINK_LOCAL = "a link-local address (where cloud metadata services live)"
    MULTICAST = "a multicast or reserved address"
    RESERVED = "a reserved or non-routable address"
    LOOPBACK = "a loopback address"
    PRIVATE = "a private-use address"
    PUBLIC = "a public address"


# Order of severity: an address carrying several is as bad as the worst.
_SEVERITY = {kind: rank for rank, kind in enumerate(AddressKind)}

_N4 = ipaddress.IPv4Network
_N6 = ipaddress.IPv6Network

_V4_TABLE: tuple[tuple[ipaddress.IPv4Network, AddressKind], ...] = (
    # RFC 1122 §3.2.1.3: "this host on this network"; Linux connects 0.0.0.0 to
    # itself (go-containerregistry#2284).
    (_N4("0.0.0.0/8"), AddressKind.UNSPECIFIED),
    (_N4("169.254.169.254/32"), AddressKind.METADATA),  # AWS, GCP, Azure, OCI, ...
    (_N4("169.254.170.2/32"), AddressKind.METADATA),  # AWS ECS task credentials
    (_N4("100.100.100.200/32"), AddressKind.METADATA),  # Alibaba Cloud
    (_N4("168.63.129.16/32"), AddressKind.METADATA),  # Azure WireServer (a public range)
    (_N4("192.0.0.192/32"), AddressKind.METADATA),  # Oracle Cloud classic
    (_N4("169.254.0.0/16"), AddressKind.LINK_LOCAL),
    (_N4("127.0.0.0/8"), AddressKind.LOOPBACK),
    (_N4("224.0.0.0/4"), AddressKind.MULTICAST),
    (_N4("240.0.0.0/4"), AddressKind.RESERVED),  # and 255.255.255.255
    (_N4("10.0.0.0/8"), AddressKind.PRIVATE),
    (_N4("172.16.0.0/12"), AddressKind.PRIVATE),
    (_N4("192.168.0.0/16"), AddressKind.PRIVATE),
    # RFC 6598 shared address space: carrier NAT, and overlay networks such as
    # Tailscale's, where private registries live.
    (_N4("100.64.0.0/10"), AddressKind.PRIVATE),
)

_V6_TABLE: tuple[tuple[ipaddress.IPv6Network, AddressKind], ...] = (
    (_N6("::/128"), AddressKind.UNSPECIFIED),
    (_N6("::1/128"), AddressKind.LOOPBACK),
    (_N6("fd00:ec2::254/128"), AddressKind.METADATA),  # AWS IMDS over IPv6
    (_N6("fd20:ce::254/128"), AddressKind.METADATA),  # GCE metadata over IPv6
    (_N6("fe80::/10"), AddressKind.LINK_LOCAL),
    (_N6("ff00::/8"), AddressKind.MULTICAST),
    (_N6("fc00::/7"), AddressKind.PRIVATE),  # RFC 4193 unique local
    (_N6("fec0::/10"), AddressKind.PRIVATE),  # RFC 3879: deprecated site-local
)

_MAPPED = _N6("::ffff:0:0/96")  # RFC 4291 §2.5.5.2
_TRANSLATED = _N6("::ffff:0:0:0/96")  # RFC 2765 §2.1 (SIIT)
_COMPATIBLE = _N6("::/96")  # RFC 4291 §2.5.5.1, deprecated
_NAT64_WKP = _N6("64:ff9b::/96")  # RFC 6052 §2.1
_NAT64_LOCAL = _N6("64:ff9b:1::/48")  # RFC 8215
_SIXTOFOUR = _N6("2002::/16")  # RFC 3056
_TEREDO = _N6("2001::/32")  # RFC 4380
_WRAPPERS = (_MAPPED, _TRANSLATED, _COMPATIBLE, _NAT64_WKP, _NAT64_LOCAL, _SIXTOFOUR, _TEREDO)


def _rfc6052_extract(ip: ipaddress.IPv6Address, prefix_length: int) -> ipaddress.IPv4Address:
    """RFC 6052 §2.2: the IPv4 address after a prefix of ``prefix_length`` bits,
    skipping the reserved octet ``u`` (bits 64-71)."""
    octets = ip.packed
    start = prefix_length // 8
    carried = [octets[i] for i in range(start, 16) if i != 8][:4]
    return ipaddress.IPv4Address(bytes(carried))


def embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 address carries, by each scheme that puts one there.

    The prefix length inside 64:ff9b:1::/48 is the operator's choice (RFC 8215
    §3), so each one RFC 6052 allows there is read. An IPv4 address carries none.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return ()
    found: list[ipaddress.IPv4Address] = []
    compatible = ip in _COMPATIBLE and int(ip) > 1  # :: and ::1 are themselves
    if ip in _MAPPED or ip in _TRANSLATED or compatible or ip in _NAT64_WKP:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in _NAT64_LOCAL:
        # Translators may ignore the suffix bits, so every reading counts and the
        # worst wins. The price: an address of a local-use prefix that reads as
        # 0.0.0.0/8 at some length is refused (allow_private_realms lifts that).
        found.extend(_rfc6052_extract(ip, n) for n in (48, 56, 64, 96))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return tuple(found)


def _worst(kinds: Iterable[AddressKind]) -> AddressKind:
    return min(kinds, key=_SEVERITY.__getitem__, default=AddressKind.PUBLIC)


def _own_kind(ip: IPAddress) -> AddressKind:
    table: Iterable[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, AddressKind]]
    table = _V4_TABLE if isinstance(ip, ipaddress.IPv4Address) else _V6_TABLE
    for network, kind in table:
        if ip in network:
            return kind
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in w for w in _WRAPPERS):
        # A translation or tunnel prefix is only the way there: what it carries counts.
        return AddressKind.PUBLIC
    if ip.is_multicast:
        return AddressKind.MULTICAST
    if not ip.is_global or ip.is_reserved:
        # Documentation, benchmarking, IETF protocol and future-use ranges.
        return AddressKind.RESERVED
    return AddressKind.PUBLIC


def classify_address(ip: IPAddress) -> AddressKind:
    """What ``ip`` is, judged by itself and by every IPv4 address it carries (worst wins)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))  # the zone names a link, not an address
    return _worst([_own_kind(ip), *(_own_kind(v4) for v4 in embedded_ipv4(ip))])


@dataclass(frozen=True)
class TrustDecision:
    """Which addresses the connections of a token request may reach.

    One value per kind of registry, so it can key a connection pool
    (:class:`aociauth._token_sessions.TokenSessions`): connections made under
    one decision never serve a request judged under another.

    ``loopback``: the registry itself is on this machine, so a loopback token
    server is its neighbour rather than a target. ``private``: private-use
    ranges (RFC 1918, RFC 4193, RFC 6598) are allowed. ``unrestricted``: the
    user lifted the address rule (``RealmPolicy(allow_private_realms=True)``);
    cloud metadata addresses stay refused even then, since no registry's token
    server lives there and they hand out the machine's own credentials.
    """

    loopback: bool = False
    private: bool = False
    unrestricted: bool = False


def forbidden_address(ip: IPAddress, trust: TrustDecision) -> str:
    """Why a token request judged under ``trust`` must not connect to ``ip``;
    ``""`` when it may. The one place that decides it, for literals and for
    resolved names alike."""
    kind = classify_address(ip)
    if kind is AddressKind.PUBLIC:
        return ""
    if kind is AddressKind.METADATA:
        return str(kind.value)
    if trust.unrestricted:
        return ""
    if kind is AddressKind.PRIVATE and trust.private:
        return ""
    if kind is AddressKind.LOOPBACK and trust.loopback:
        return ""
    return str(kind.value)


_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


def parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """Read the IPv4 forms ``inet_aton`` accepts, which yarl leaves as they are.

    ``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` all reach
    127.0.0.1 through the system resolver. Returns None when ``host`` is a
    host name (its last label is not numeric); raises ValueError when its last
    label is numeric but the whole is no address (the WHATWG URL standard's
    "ends in a number" rule), since resolvers disagree about such names.
    """
    labels = host.split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    if len(labels) > 4 or not all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        raise ValueError("numeric host is not an IPv4 address")
    numbers = []
    for label in labels:
        if len(label) > 12:
            # No component of an address is that long; int() of a huge string is slow.
            raise ValueError("numeric host is out of range")
        if label[:2] in ("0x", "0X"):
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label[0] == "0":
            numbers.append(int(label, 8))  # raises ValueError for 8 and 9
        else:
            numbers.append(int(label))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise ValueError("numeric host is out of range")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_address(text: str) -> IPAddress | None:
    """An address as a resolver or a URL writes it (brackets, zone ``%eth0`` or
    ``%25eth0``, a trailing dot, ``inet_aton`` spellings), or None for a host name.

    Raises ValueError for text that is neither (a numeric name no resolver
    agrees on, a malformed IPv6 literal).
    """
    host = text.strip("[]").lower()
    if host.endswith("."):
        host = host[:-1]
    if ":" in host:
        address, _, _zone = host.partition("%")
        return ipaddress.IPv6Address(address)
    if not host:
        raise ValueError("empty host")
    return parse_inet_aton(host)


# RFC 1035 §2.3.1 labels, plus "_", which private networks use in host names.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_MAX_HOST_LENGTH = 253


def folded_host_name(host: str) -> str:
    """The form host names are compared in: lower case, no trailing dot."""
    host = host.lower()
    return host[:-1] if host.endswith(".") else host


def parse_host(raw_host: str) -> IPAddress | str:
    """Classify a URL's host as an IP address or a valid DNS name (folded).

    Raises ValueError for anything else, so that nothing odd (spaces, numeric
    names no resolver agrees on) reaches a token request or a message.
    """
    host = folded_host_name(raw_host)
    if ":" in host:
        return ipaddress.IPv6Address(host)
    ipv4 = parse_inet_aton(host)
    if ipv4 is not None:
        return ipv4
    if not host or len(host) > _MAX_HOST_LENGTH:
        raise ValueError("bad host name length")
    if not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise ValueError("not a host name")
    return host


def is_localhost_name(name: str) -> bool:
    """Whether the folded host name ``name`` is ``localhost`` or a name under it.

    RFC 6761 §6.3: such names are loopback, whatever a resolver would answer.
    """
    return name == "localhost" or name.endswith(".localhost")


def on_this_machine(host: str) -> bool:
    """Whether ``host`` (a URL's host, an IPv6 address without brackets) names this machine.

    The one rule for "this machine", for the realm guard and the command line
    alike: a loopback address in any form a resolver reads (``127.1``,
    ``0x7f.1``, ``::ffff:127.0.0.1``), or ``localhost`` and the names under it.
    """
    try:
        parsed = parse_host(host)
    except ValueError:
        return False
    if isinstance(parsed, str):
        return is_localhost_name(parsed)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed.is_loopback
