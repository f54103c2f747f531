"""Fixtures shared by the test modules.

Tests marked ``registry`` need Debian's ``docker-registry`` (distribution 2.8);
they are skipped, with the reason shown, where it is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from aociauth.testing._jwt import TokenIssuer
from aociauth.testing.distribution import DistributionRegistry, find_binary
from aociauth.testing.passstore import PassStore, missing_binaries
from aociauth.testing.tls import TLSContexts, make_tls

# The tests issue tokens themselves: no token server answers at this realm.
DISTRIBUTION_TOKEN_REALM = "http://127.0.0.1:9/token"
DISTRIBUTION_USERS = {"alice": "alice-password", "bob": "bob-password"}
_NO_REGISTRY = "docker-registry (distribution 2.8) is not on PATH: apt-get install docker-registry"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``registry`` tests, saying why, when ``docker-registry`` is missing."""
    if find_binary() is not None:
        return
    skip = pytest.mark.skip(reason=_NO_REGISTRY)
    for item in items:
        if "registry" in item.keywords:
            item.add_marker(skip)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def distribution_htpasswd() -> AsyncIterator[DistributionRegistry]:
    """A real registry taking Basic credentials of :data:`DISTRIBUTION_USERS` (``.users``)."""
    _require_registry()
    async with DistributionRegistry(auth="htpasswd", users=DISTRIBUTION_USERS) as registry:
        yield registry


@pytest.fixture(scope="session")
def distribution_token_issuer() -> TokenIssuer:
    """The :class:`~aociauth.testing._jwt.TokenIssuer` whose tokens ``distribution_token`` takes."""
    return TokenIssuer()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def distribution_token(
    distribution_token_issuer: TokenIssuer,
) -> AsyncIterator[DistributionRegistry]:
    """A real registry taking bearer tokens of ``distribution_token_issuer``."""
    _require_registry()
    issuer = distribution_token_issuer
    async with DistributionRegistry(
        auth="token",
        realm=DISTRIBUTION_TOKEN_REALM,
        service=issuer.service,
        issuer=issuer.issuer,
        rootcertbundle=issuer.root_cert_pem,
    ) as registry:
        yield registry


@pytest.fixture(autouse=True)
def _no_system_podman_file(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process loads never read this machine's /run/containers/$UID/auth.json.

    ``load_with_env`` falls back to it when ``XDG_RUNTIME_DIR`` is unset, as
    podman does; tests that mean to read it point it at a temporary file.
    """
    missing = tmp_path_factory.getbasetemp() / "no-run-containers" / "{uid}" / "auth.json"
    monkeypatch.setattr("aociauth.config._RUN_CONTAINERS_AUTH", str(missing))


@pytest.fixture(scope="session")
def tls() -> TLSContexts:
    """A throwaway CA's server and client contexts for the names the tests reach on loopback.

    Docker Hub's names are among them, for the built-in trusted pair: only a
    :class:`~aociauth.testing.client.LoopbackResolver` ever resolves them.
    """
    names = ("reg.test", "auth.test", "evil.test", "cdn.test", "reg.example.com")
    names += ("auth.example.com", "registry-1.docker.io", "index.docker.io", "auth.docker.io")
    return make_tls(names, common_name="aociauth tests CA")


@pytest.fixture(scope="module")
def pass_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    """An initialised, empty store for the real docker-credential-pass (skips without it)."""
    missing = missing_binaries()
    if missing:
        hint = "apt-get install golang-docker-credential-helpers pass gnupg"
        pytest.skip(f"needs {', '.join(missing)}: {hint}")
    with PassStore.initialised(tmp_path_factory.mktemp("pass")) as store:
        yield store


def _require_registry() -> None:
    # For a test that uses the fixtures without the ``registry`` mark.
    if find_binary() is None:
        pytest.skip(_NO_REGISTRY)


@pytest.fixture
async def stack() -> AsyncIterator[list[Any]]:
    """What a test started, each stopped (``stop()``) or closed (``close()``) after it.

    Servers (:class:`aociauth.testing.gotest.GoServers`), middlewares, sessions.
    """
    items: list[Any] = []
    yield items
    for item in reversed(items):
        await (item.stop() if hasattr(item, "stop") else item.close())
