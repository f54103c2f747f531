"""Test doubles for code that talks to OCI registries: a registry, a token server, keys.

``aociauth.testing`` runs, inside your test process, the servers an
authenticating registry client meets, on ``127.0.0.1`` and a free port:

* :class:`TokenServer`: a distribution token server (``GET /token`` with
  Basic credentials or anonymously, ``POST /token`` with the OAuth2 password
  and refresh-token grants). Who may do what is configurable, and it can be
  told to misbehave: fail the next requests, answer HTML or a huge body,
  redirect, stall or drop the connection. It counts and records everything
  it receives (never a password) in :attr:`TokenServer.counters` and
  :attr:`TokenServer.requests`.
* :class:`Registry`: an in-memory OCI registry that authenticates exactly
  like distribution 2.8 (``auth="none"``, ``"basic"`` or ``"bearer"`` with a
  :class:`TokenServer`): the same challenges, ``error=`` values, 401 bodies
  and quirks. ``seed_image`` stores a small image to pull; ``counters`` and
  ``requests`` tell which requests came with which credentials and scopes.
* :class:`RecordingServer`: records every request, headers and body, and
  serves blobs: the CDN a registry redirects blob downloads to, or the
  attacker a credential must never reach (:meth:`RecordingServer.credentials_seen`).
* :class:`RedisServer` (and :class:`RedisClusterServers`): Debian's real
  ``redis-server`` on a free loopback port, persistence off, that a test can
  kill, restart and pause: the backend of :mod:`aociauth.redis`.
* :class:`ScriptedServer`: answers with a function the test writes (or a
  list of :class:`Reply` in turn) and records every request as an
  :class:`Exchange`: the odd registry or token endpoint a test is about.
* :class:`TokenIssuer`: the keys behind the token server. It signs JWTs
  that the reference registry (distribution 2.8) accepts, so the same tokens
  work against the in-process fakes and a real ``docker-registry``.

On the client side, :func:`loopback_client` builds a middleware and a
session through it that reach every host name on 127.0.0.1
(:class:`LoopbackResolver`), so origin and realm checks see distinct hosts;
:class:`TableResolver` answers names from a table instead of DNS.
:mod:`aociauth.testing.leaks` plants canary secrets and looks for them,
:mod:`aociauth.testing.credhelper` installs a fake ``docker-credential-*``
helper answering per host, :mod:`aociauth.testing.passstore` a throw-away
store for the real ``docker-credential-pass``,
:mod:`aociauth.testing.adapters` runs a test through the aiohttp middleware
and the httpx auth alike (httpx on trio too), and :mod:`aociauth.testing.gotest`
is the harness of the Go original's tests, for tests ported from it.

Two modules build on the servers: :mod:`aociauth.testing.tls` makes a throwaway CA
and the contexts to serve and trust https on loopback under any name, and
:mod:`aociauth.testing.zoo` emulates nine public registries (Docker Hub,
GHCR, GCR, Artifact Registry, ECR, ACR, Quay, Harbor, GitLab) under their
real host names, with the flows and the audit of the registry zoo.

Each server is an async context manager, and each knob is an attribute a
test may change between requests::

    async with (
        TokenServer(users={"alice": "secret"}) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
    ):
        image = reg.seed_image("team/app", "v1")
        ...  # pull reg.url + "/v2/team/app/manifests/v1" with your client
        assert ts.counters.get_basic == 1

Tests should prove behaviour by these counters, not by timing: ``pause()``,
``wait_for_requests(n)`` and ``resume()`` line up concurrent requests, and
``fail_next``/``respond_with`` inject failures for the next requests only.

With pytest and pytest-asyncio, the ``pytest11`` plugin
(:mod:`aociauth.testing.pytest_plugin`) provides ready-made fixtures:
``oci_token_server``, ``oci_registry`` (bearer), ``oci_basic_registry``,
``oci_open_registry``, ``oci_registry_factory`` and ``oci_redis_server``.
Their registries are private: only ``USER`` may pull, unless a test names
public repositories by overriding ``oci_public_repositories``.

Names are imported on first use, so that loading the pytest plugin (which
pytest does in every project that has aociauth installed) needs neither
``cryptography`` (the ``testing`` extra) nor the servers' code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aociauth.testing._http import Exchange
    from aociauth.testing._jwt import TokenIssuer
    from aociauth.testing.client import LoopbackResolver, TableResolver, loopback_client
    from aociauth.testing.redis import RedisClusterServers, RedisServer
    from aociauth.testing.registry import (
        RecordedRequest,
        RecordingServer,
        Registry,
        RegistryCounters,
        RegistryRequest,
        SeededImage,
    )
    from aociauth.testing.scripted import Reply, ScriptedServer
    from aociauth.testing.tokenserver import (
        Access,
        Grants,
        TokenRequest,
        TokenServer,
        TokenServerCounters,
    )

__all__ = [
    "Access",
    "Exchange",
    "Grants",
    "LoopbackResolver",
    "RecordedRequest",
    "RecordingServer",
    "RedisClusterServers",
    "RedisServer",
    "Registry",
    "RegistryCounters",
    "RegistryRequest",
    "Reply",
    "ScriptedServer",
    "SeededImage",
    "TableResolver",
    "TokenIssuer",
    "TokenRequest",
    "TokenServer",
    "TokenServerCounters",
    "loopback_client",
]

_HOMES = {
    "Exchange": "aociauth.testing._http",
    "LoopbackResolver": "aociauth.testing.client",
    "TableResolver": "aociauth.testing.client",
    "loopback_client": "aociauth.testing.client",
    "Reply": "aociauth.testing.scripted",
    "ScriptedServer": "aociauth.testing.scripted",
    "TokenIssuer": "aociauth.testing._jwt",
    "RecordedRequest": "aociauth.testing.registry",
    "RecordingServer": "aociauth.testing.registry",
    "RedisClusterServers": "aociauth.testing.redis",
    "RedisServer": "aociauth.testing.redis",
    "Registry": "aociauth.testing.registry",
    "RegistryCounters": "aociauth.testing.registry",
    "RegistryRequest": "aociauth.testing.registry",
    "SeededImage": "aociauth.testing.registry",
    "Access": "aociauth.testing.tokenserver",
    "Grants": "aociauth.testing.tokenserver",
    "TokenRequest": "aociauth.testing.tokenserver",
    "TokenServer": "aociauth.testing.tokenserver",
    "TokenServerCounters": "aociauth.testing.tokenserver",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
