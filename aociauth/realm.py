"""The realm policy: where a token request may go, and whether it may carry credentials.

A Bearer challenge names the token endpoint (its ``realm``), and the Go
original sends the user's Basic credentials or refresh token there, wherever
it is. A hostile or compromised registry can therefore aim the user's
credentials at any host, or the token request itself at an internal address
(go-containerregistry#2193, oras-go GHSA-xf85-363p-868w, distribution
GHSA-3p65-76g6-3w7r). :func:`check_realm` decides, before every token request,
one of three things (:class:`RealmDecision`):

* **CREDENTIALS**: the realm is on the registry's own host name (any port), on
  a host of the same registrable domain, or on a trusted registry→realm pair,
  and it is reached over https (or over plain http when the registry itself
  is plain http and the realm has its host name).
* **ANONYMOUS**: the token request may go, but without credentials; the
  caller logs a warning. ``strict`` turns this into REFUSE.
* **REFUSE**: no token request at all: the realm is not an absolute
  http(s) URL, carries userinfo, or points at a loopback, private, link-local,
  reserved or unspecified address (or ``localhost``) other than the
  registry's own host.

This module is pure: it looks at strings only and never resolves a name.
Names that resolve to internal addresses (go-containerregistry#2440) are the
connector's business, not this one's.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import yarl
from publicsuffixlist import PublicSuffixList

from aociauth._addresses import (
    TrustDecision,
    folded_host_name,
    forbidden_address,
    is_localhost_name,
    parse_host,
)
from aociauth._urls import join_url, parse_url

__all__ = [
    "DEFAULT_TRUSTED_REALMS",
    "RealmDecision",
    "RealmPolicy",
    "RealmVerdict",
    "absolute_realm",
    "check_realm",
]

_IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"

#: Registry host → realm hosts trusted with its credentials out of the box.
#: Docker Hub serves the registry on three names and tokens from another host.
DEFAULT_TRUSTED_REALMS: Mapping[str, frozenset[str]] = types.MappingProxyType(
    {
        "docker.io": frozenset({"auth.docker.io"}),
        "index.docker.io": frozenset({"auth.docker.io"}),
        "registry-1.docker.io": frozenset({"auth.docker.io"}),
    }
)

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,15}")


class RealmDecision(enum.Enum):
    """What the caller may do with a token request to a realm."""

    #: Send the token request with the registry's credentials (Basic or refresh token).
    CREDENTIALS = "credentials"
    #: Send the token request without credentials, and log a warning.
    ANONYMOUS = "anonymous"
    #: Send no token request at all; raise :class:`~aociauth.errors.RealmPolicyError`.
    REFUSE = "refuse"


@dataclass(frozen=True)
class RealmVerdict:
    """The outcome of :func:`check_realm`.

    ``reason`` is a short message naming the realm's scheme, host and port,
    never its path, query or userinfo, so it can be logged and put in an
    exception. ``url`` is the parsed realm, for the token request; it is the
    empty URL when the realm did not parse, and is left out of ``repr``
    because it can carry anything the registry put in it.
    """

    decision: RealmDecision
    reason: str
    url: yarl.URL = field(default_factory=yarl.URL, repr=False)


def _normalise_host_name(name: str) -> str:
    """A host name as configured by a user, in the form URLs are compared in."""
    if not isinstance(name, str) or not name:
        raise ValueError("a trusted host must be a non-empty host name")
    try:
        raw = yarl.URL.build(scheme="https", host=name).raw_host
    except Exception as exc:
        # yarl raises IndexError too for some text ("[]@"); all of it is "not a host name".
        raise ValueError(f"{name!r} is not a host name (no scheme, port or path)") from exc
    if not raw:
        raise ValueError(f"{name!r} is not a host name")
    return _canonical(raw)


def _normalise_pairs(pairs: Mapping[str, Iterable[str]]) -> Mapping[str, frozenset[str]]:
    merged: dict[str, set[str]] = {}
    for registry, realms in pairs.items():
        if isinstance(realms, str):
            # A bare string would be iterated character by character.
            raise TypeError(f"trusted realms for {registry!r} must be a set of host names")
        hosts = merged.setdefault(_normalise_host_name(registry), set())
        hosts.update(_normalise_host_name(h) for h in realms)
    return types.MappingProxyType({k: frozenset(v) for k, v in merged.items()})


@dataclass(frozen=True)
class RealmPolicy:
    """Which realms may receive a registry's credentials; secure by default.

    ``trusted_realms`` maps a registry host name to the realm host names
    trusted with its credentials. Pairs, not a list of realm hosts: a list
    would let any registry aim its users' credentials at a listed host
    (the confused deputy of oras-dotnet#393). Docker Hub is built in
    (:data:`DEFAULT_TRUSTED_REALMS`); add more with :meth:`with_trusted`.

    ``allow_same_site`` lets credentials go to a host of the registry's
    registrable domain (``registry.gitlab.com`` → ``gitlab.com``), judged by
    the public suffix list bundled with ``publicsuffixlist``. ``strict``
    refuses a realm that would otherwise be asked anonymously.
    ``allow_private_realms`` lets token requests go to loopback, private and
    link-local addresses other than the registry's own host; cloud metadata
    addresses (169.254.169.254, ``fd00:ec2::254``, 100.100.100.200, ...) stay
    refused, as literals and as DNS answers (:mod:`aociauth._addresses`).

    Host names are compared in lower case without a trailing dot, international
    names in their IDNA (``xn--``) form; ports never matter.
    """

    trusted_realms: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: DEFAULT_TRUSTED_REALMS
    )
    allow_same_site: bool = True
    strict: bool = False
    allow_private_realms: bool = False

    def __post_init__(self) -> None:
        # Frozen dataclass: normalising in place needs object.__setattr__.
        object.__setattr__(self, "trusted_realms", _normalise_pairs(self.trusted_realms))

    def __hash__(self) -> int:
        return hash(
            (
                frozenset(self.trusted_realms.items()),
                self.allow_same_site,
                self.strict,
                self.allow_private_realms,
            )
        )

    def with_trusted(self, registry: str, *realm_hosts: str) -> RealmPolicy:
        """A copy of this policy that also trusts ``realm_hosts`` for ``registry``.

        For example, a self-managed GitLab whose registry and token endpoint
        live on unrelated domains::

            policy = RealmPolicy().with_trusted("registry.example.net", "gitlab.example.org")
        """
        if not realm_hosts:
            raise ValueError("with_trusted needs at least one realm host")
        pairs = dict(self.trusted_realms)
        key = _normalise_host_name(registry)
        pairs[key] = pairs.get(key, frozenset()) | frozenset(realm_hosts)
        return dataclasses.replace(self, trusted_realms=pairs)

    def trusts(self, registry_host: str, realm_host: str) -> bool:
        """Whether ``realm_host`` is an explicitly trusted realm for ``registry_host``.

        Both are host names (any case, Unicode or IDNA); raises ValueError for
        anything that is not a host name.
        """
        return self._trusts_canonical(
            _normalise_host_name(registry_host), _normalise_host_name(realm_host)
        )

    def _trusts_canonical(self, registry_host: str, realm_host: str) -> bool:
        return realm_host in self.trusted_realms.get(registry_host, frozenset())


@functools.lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    # Parsing the bundled list takes a while; the result is immutable, so one
    # per process is enough, and it is built only when first needed.
    return PublicSuffixList()


def _registrable_domain(host: str) -> str | None:
    return _psl().privatesuffix(host)


def _canonical(raw_host: str) -> str:
    """The string two hosts are equal by: an address's compressed form, else the name."""
    try:
        return str(parse_host(raw_host))
    except ValueError:
        return folded_host_name(raw_host)


#: What a realm written as an address may be, unless it is the registry's own
#: host: public only. A private literal from a public registry is how SSRF is
#: aimed; a name is judged again where it resolves (:mod:`aociauth._resolver`).
_LITERAL_TRUST = TrustDecision(loopback=False, private=False)
_LITERAL_TRUST_UNRESTRICTED = TrustDecision(unrestricted=True)


def _is_internal(ip: _IPAddress, policy: RealmPolicy) -> bool:
    """Whether a realm may not be the literal address ``ip`` (the registry's own aside).

    An IPv6 address that carries an IPv4 one (mapped, compatible, 6to4,
    Teredo, NAT64) is judged by that too, so ``::ffff:127.0.0.1`` is loopback.
    """
    trust = _LITERAL_TRUST_UNRESTRICTED if policy.allow_private_realms else _LITERAL_TRUST
    return bool(forbidden_address(ip, trust))


def _describe(url: yarl.URL, host: _IPAddress | str) -> str:
    """``scheme://host[:port]`` of a realm: enough to say which, nothing secret."""
    shown = f"[{host}]" if isinstance(host, ipaddress.IPv6Address) else str(host)
    port = f":{url.explicit_port}" if url.explicit_port is not None else ""
    return f"{url.scheme}://{shown}{port}"


def _refuse(reason: str, url: yarl.URL | None = None) -> RealmVerdict:
    return RealmVerdict(RealmDecision.REFUSE, reason, url if url is not None else yarl.URL())


def _parse_realm(realm: str) -> RealmVerdict | tuple[yarl.URL, _IPAddress | str]:
    """The realm URL and its host, or a REFUSE verdict saying why not."""
    if not isinstance(realm, str) or not realm.strip():
        return _refuse("realm is empty")
    parsed = parse_url(realm)
    if parsed is None:
        return _refuse("realm is not a valid URL")
    url = parsed
    raw_host = url.raw_host
    has_userinfo = url.raw_user is not None or url.raw_password is not None
    scheme = url.scheme.lower()
    if scheme not in ("http", "https"):
        if not scheme:
            return _refuse("realm is not an absolute URL")
        shown = repr(scheme) if _SCHEME.fullmatch(scheme) else "its scheme"
        return _refuse(f"realm scheme {shown} is not http or https")
    if not raw_host:
        return _refuse("realm URL has no host")
    try:
        host = parse_host(raw_host)
    except ValueError:
        return _refuse(f"realm {scheme} URL has an invalid host")
    if has_userinfo:
        # Never show the userinfo itself, only that it was there.
        return _refuse(f"realm {_describe(url, host)} carries userinfo", url)
    return url, host


def _same_site(registry_host: _IPAddress | str, realm_host: _IPAddress | str) -> str | None:
    """The registrable domain both hosts share, if both are names and share one."""
    if not isinstance(registry_host, str) or not isinstance(realm_host, str):
        return None
    site = _registrable_domain(realm_host)
    if site is None or site != _registrable_domain(registry_host):
        return None
    return site


def check_realm(
    registry: yarl.URL, realm: str, policy: RealmPolicy = RealmPolicy()
) -> RealmVerdict:
    """Decide whether and how a token request may go to ``realm``.

    ``registry`` is the URL of the registry that sent the challenge (scheme
    and host are what count; path and port are ignored); ``realm`` is the
    challenge's realm exactly as sent. A relative realm is refused: resolve it
    against the registry URL first if it should be followed. See the module
    docstring for the rules and :class:`RealmDecision` for the outcomes.

    Raises ValueError if ``registry`` has no host, which is a caller's bug.
    """
    if not registry.raw_host:
        raise ValueError("registry URL has no host")
    parsed = _parse_realm(realm)
    if isinstance(parsed, RealmVerdict):
        return parsed
    url, realm_host = parsed
    try:
        registry_host: _IPAddress | str = parse_host(registry.raw_host)
    except ValueError:
        registry_host = folded_host_name(registry.raw_host)
    shown = _describe(url, realm_host)
    registry_name = str(registry_host)
    same_host = str(realm_host) == registry_name

    if isinstance(realm_host, str):
        internal = is_localhost_name(realm_host) and not policy.allow_private_realms
    else:
        internal = _is_internal(realm_host, policy)
    if internal and not same_host:
        return _refuse(
            f"realm {shown} is a local or private address and not the registry's host "
            f"{registry_name}",
            url,
        )

    def downgrade(why: str) -> RealmVerdict:
        if policy.strict:
            return _refuse(f"{why} (strict realm policy)", url)
        return RealmVerdict(RealmDecision.ANONYMOUS, why, url)

    if url.scheme == "http" and registry.scheme != "http":
        return downgrade(f"realm {shown} is plain http but the registry {registry_name} is not")
    if url.scheme == "http" and not same_host:
        return downgrade(f"realm {shown} is plain http and not the registry's host {registry_name}")
    if same_host:
        return RealmVerdict(RealmDecision.CREDENTIALS, f"realm {shown} is the registry's host", url)
    if policy._trusts_canonical(registry_name, str(realm_host)):
        return RealmVerdict(
            RealmDecision.CREDENTIALS, f"realm {shown} is trusted for {registry_name}", url
        )
    site = _same_site(registry_host, realm_host) if policy.allow_same_site else None
    if site is not None:
        return RealmVerdict(
            RealmDecision.CREDENTIALS, f"realm {shown} is on the registry's site {site}", url
        )
    return downgrade(f"realm {shown} is not trusted with credentials for {registry_name}")


def absolute_realm(registry: yarl.URL, realm: str) -> str:
    """``realm`` resolved against the registry's URL when it is relative (seen in
    the wild; RFC 3986 §5), else as it is.

    Never raises: text that does not parse is returned unchanged, for
    :func:`check_realm` to refuse.
    """
    parsed = parse_url(realm)
    if parsed is None or parsed.is_absolute() or not realm.strip():
        return realm
    joined = join_url(registry, parsed)
    return realm if joined is None else str(joined)
