"""The pytest plugin of :mod:`aociauth.testing` (the ``pytest11`` entry point).

Fixtures, each yielding a running server on 127.0.0.1 and stopping it after
the test:

* ``oci_token_server``: a :class:`~aociauth.testing.TokenServer` with the user
  ``alice`` / ``secret-password`` (:data:`USER`, :data:`PASSWORD`), who may do
  anything; anonymous users may pull only the repositories
  ``oci_public_repositories`` names (none unless a test overrides it), so
  that code which forgets its credentials fails, as against a private registry.
* ``oci_public_repositories``: the repository patterns anonymous users may
  pull (:func:`fnmatch.fnmatchcase`, e.g. ``"library/*"``); ``()``. Override
  it in a test module or conftest to make some public.
* ``oci_registry``: a bearer-token :class:`~aociauth.testing.Registry` backed
  by ``oci_token_server``.
* ``oci_basic_registry``: a Registry with Basic auth for the same user.
* ``oci_open_registry``: a Registry without authentication.
* ``oci_registry_factory``: an async function taking Registry's keyword
  arguments and returning a started Registry; with ``auth="bearer"`` and no
  ``token_server`` it starts a TokenServer of its own for it. Everything it
  started is stopped after the test.
* ``oci_redis_server``: a :class:`~aociauth.testing.redis.RedisServer`, Debian's
  real ``redis-server`` with persistence off (skipped where it is not installed).
* ``oci_client``: an async factory of sessions through the middleware,
  ``await oci_client(config, **params)`` (the arguments of
  :func:`~aociauth.testing.client.loopback_client`); every session and
  middleware it made is closed after the test.

The fixtures need pytest-asyncio and the ``testing`` extra (cryptography);
without them a test using one is skipped, saying why. pytest loads this module
in every run of every project that has aociauth installed, so it imports the
servers only inside the fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised in environments without it
    pytest_asyncio = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import aiohttp

    from aociauth.testing.redis import RedisServer
    from aociauth.testing.registry import Registry
    from aociauth.testing.tokenserver import TokenServer

__all__ = [
    "PASSWORD",
    "USER",
    "USER_ACTIONS",
    "ClientFactory",
    "RegistryFactory",
    "fixture_grants",
    "oci_basic_registry",
    "oci_client",
    "oci_open_registry",
    "oci_public_repositories",
    "oci_redis_server",
    "oci_registry",
    "oci_registry_factory",
    "oci_token_server",
]

USER = "alice"
"""The user the fixtures' servers know."""
PASSWORD = "secret-password"  # noqa: S105 (a test fixture's well-known password)
"""The password of :data:`USER`."""

#: What :data:`USER` may do on any resource: every action distribution knows
#: (``*`` is ``registry:catalog``'s).
USER_ACTIONS = frozenset({"pull", "push", "delete", "*"})

RegistryFactory = Callable[..., Awaitable["Registry"]]
"""``await factory(**registry_kwargs)`` -> a started :class:`~aociauth.testing.Registry`."""

ClientFactory = Callable[..., Awaitable["aiohttp.ClientSession"]]
"""``await factory(config, **loopback_client_kwargs)`` -> a session through a new middleware."""

_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(func: _F) -> _F:
    """Make ``func`` an async fixture, or one that skips when pytest-asyncio is missing."""
    if pytest_asyncio is not None:
        return cast(_F, pytest_asyncio.fixture(func))

    def unavailable() -> Iterator[None]:
        pytest.skip(f"the {func.__name__} fixture needs pytest-asyncio")
        yield  # pragma: no cover

    unavailable.__doc__ = func.__doc__
    return cast(_F, pytest.fixture(name=func.__name__)(unavailable))


def _import_servers() -> tuple[type[TokenServer], type[Registry]]:
    pytest.importorskip(
        "cryptography", reason="aociauth's fixtures need the testing extra: aociauth[testing]"
    )
    from aociauth.testing.registry import Registry
    from aociauth.testing.tokenserver import TokenServer

    return TokenServer, Registry


def fixture_grants(public: Iterable[str] = ()) -> dict[str | None, dict[str, set[str]]]:
    """The fixtures' token-server grants: :data:`USER` may do anything, anonymous pull ``public``.

    ``public`` holds repository patterns (:func:`fnmatch.fnmatchcase`). The
    result is the mapping form of :data:`~aociauth.testing.tokenserver.Grants`,
    so a test can read or change it (``oci_token_server.grants``).
    """
    grants: dict[str | None, dict[str, set[str]]] = {USER: {"*": set(USER_ACTIONS)}}
    grants[None] = {f"repository:{pattern}": {"pull"} for pattern in public}
    return grants


@pytest.fixture
def oci_public_repositories() -> tuple[str, ...]:
    """Repository patterns anonymous users may pull from the fixtures' token servers: none.

    Override it (a fixture of the same name in a test module or conftest) to
    name public repositories, e.g. ``return ("library/*",)``.
    """
    return ()


@_async_fixture
async def oci_token_server(oci_public_repositories: tuple[str, ...]) -> AsyncIterator[TokenServer]:
    """A running TokenServer: ``alice`` / ``secret-password`` may do anything.

    Anonymous users may pull the repositories ``oci_public_repositories``
    names and nothing else.
    """
    token_server_class, _ = _import_servers()
    grants = fixture_grants(oci_public_repositories)
    async with token_server_class(users={USER: PASSWORD}, grants=grants) as server:
        yield server


@_async_fixture
async def oci_registry(oci_token_server: TokenServer) -> AsyncIterator[Registry]:
    """A running bearer-token Registry whose tokens come from ``oci_token_server``."""
    _, registry_class = _import_servers()
    async with registry_class(auth="bearer", token_server=oci_token_server) as registry:
        yield registry


@_async_fixture
async def oci_basic_registry() -> AsyncIterator[Registry]:
    """A running Registry with Basic auth for ``alice`` / ``secret-password``."""
    _, registry_class = _import_servers()
    async with registry_class(auth="basic", users={USER: PASSWORD}) as registry:
        yield registry


@_async_fixture
async def oci_open_registry() -> AsyncIterator[Registry]:
    """A running Registry without authentication."""
    _, registry_class = _import_servers()
    async with registry_class() as registry:
        yield registry


@_async_fixture
async def oci_registry_factory(
    oci_public_repositories: tuple[str, ...],
) -> AsyncIterator[RegistryFactory]:
    """An async factory of started Registries; all are stopped after the test.

    ``await oci_registry_factory(auth="bearer", shuffle_challenges=True)``
    gives a Registry with its own TokenServer (``registry.token_server``) for
    ``alice``, with the grants of ``oci_token_server``; pass ``token_server=``
    to share one.
    """
    token_server_class, registry_class = _import_servers()
    started: list[TokenServer | Registry] = []

    async def factory(**kwargs: Any) -> Registry:
        if kwargs.get("auth") == "bearer" and kwargs.get("token_server") is None:
            grants = fixture_grants(oci_public_repositories)
            token_server = token_server_class(users={USER: PASSWORD}, grants=grants)
            await token_server.start()
            started.append(token_server)
            kwargs["token_server"] = token_server
        if kwargs.get("auth") == "basic":
            kwargs.setdefault("users", {USER: PASSWORD})
        registry = registry_class(**kwargs)
        await registry.start()
        started.append(registry)
        return registry

    try:
        yield factory
    finally:
        for server in reversed(started):
            await server.stop()


@_async_fixture
async def oci_redis_server() -> AsyncIterator[RedisServer]:
    """A running, empty ``redis-server`` on 127.0.0.1 (no password, persistence off).

    Skips the test where Debian's ``redis-server`` is not installed.
    """
    from aociauth.testing.redis import RedisServer, find_redis_server

    if find_redis_server() is None:
        pytest.skip("redis-server is not on PATH: apt-get install redis-server")
    async with RedisServer() as server:
        yield server


@_async_fixture
async def oci_client() -> AsyncIterator[ClientFactory]:
    """An async factory of sessions through the middleware; all are closed after the test.

    ``await oci_client(config, **kwargs)`` takes the arguments of
    :func:`~aociauth.testing.client.loopback_client` (StdTransportParams
    fields among them) and returns the session. A test that reads the
    middleware's ``stats`` uses ``loopback_client`` itself, which yields both.
    """
    import contextlib

    from aociauth.testing.client import loopback_client

    async with contextlib.AsyncExitStack() as opened:

        async def factory(config: Any, **kwargs: Any) -> aiohttp.ClientSession:
            _, session = await opened.enter_async_context(loopback_client(config, **kwargs))
            return session

        yield factory
