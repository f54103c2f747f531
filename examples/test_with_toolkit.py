"""Testing your own registry code with aociauth's pytest fixtures.

Run it: ``python -m pytest examples/test_with_toolkit.py`` (needs
``pip install -e '.[test]'``, or aociauth[testing] with pytest and pytest-asyncio).

Installing aociauth registers a pytest plugin whose fixtures start servers in
the test's event loop on 127.0.0.1 and stop them after the test:
``oci_token_server``, ``oci_registry`` (bearer tokens from that token
server), ``oci_basic_registry``, ``oci_open_registry`` and
``oci_registry_factory``. Their user is ``USER`` / ``PASSWORD``, who may do
anything; anonymous users may pull nothing, unless a test names public
repositories by overriding the ``oci_public_repositories`` fixture. The servers
count what they were asked, so a test proves how many round trips the code
under test made, without a network and without timing.

The code under test here is ``latest_digests``, a small puller of the kind a
user writes with aociauth.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

import aociauth
from aociauth.testing import Registry, TokenServer
from aociauth.testing.pytest_plugin import PASSWORD, USER, RegistryFactory

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


# -- the code under test: what a user's program would contain ------------------------


async def latest_digests(
    base_url: str, repositories: list[str], config: aociauth.Config
) -> tuple[dict[str, str], aociauth.AuthStats]:
    """The manifest digest of ``latest`` in each repository, fetched concurrently."""
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config))
    async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:

        async def digest(repository: str) -> str:
            url = f"{base_url}/v2/{repository}/manifests/latest"
            async with session.head(url, headers={"Accept": ACCEPT}) as resp:
                resp.raise_for_status()
                return resp.headers["Docker-Content-Digest"]

        found = await asyncio.gather(*(digest(r) for r in repositories))
    return dict(zip(repositories, found, strict=True)), mw.stats


def login(registry: Registry, **entry: str) -> aociauth.ConfigFile:
    """What `docker login` would leave for the registry (default: the fixtures' user)."""
    entry = entry or {"username": USER, "password": PASSWORD}
    return aociauth.ConfigFile.from_dict({"auths": {registry.host: entry}})


# -- the tests ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pulls_with_one_challenge_and_one_token_request(
    oci_registry: Registry, oci_token_server: TokenServer
) -> None:
    repositories = [f"team/app{i}" for i in range(20)]
    seeded = {r: oci_registry.seed_image(r).manifest_digest for r in repositories}

    digests, stats = await latest_digests(oci_registry.url, repositories, login(oci_registry))

    assert digests == seeded
    assert oci_registry.counters.unauthorized == 1
    # The concurrent misses share one token request, for every repository's scope.
    assert oci_token_server.counters.get_basic == 1
    assert stats.total_token_requests == 1
    assert sorted(oci_token_server.requests[0].scopes) == sorted(
        f"repository:{r}:pull" for r in repositories
    )


@pytest.mark.asyncio
async def test_survives_a_flaky_token_server(
    oci_registry: Registry, oci_token_server: TokenServer
) -> None:
    oci_registry.seed_image("team/app")
    oci_token_server.fail_next(2, status=503)

    digests, stats = await latest_digests(oci_registry.url, ["team/app"], login(oci_registry))

    assert list(digests) == ["team/app"]
    assert oci_token_server.counters.failures_injected == 2
    assert stats.token_server_retries == 2


@pytest.mark.asyncio
async def test_uses_a_refresh_token_from_the_config(
    oci_registry: Registry, oci_token_server: TokenServer
) -> None:
    oci_registry.seed_image("team/app")
    refresh_token = oci_token_server.issue_refresh_token(USER)

    await latest_digests(
        oci_registry.url, ["team/app"], login(oci_registry, identitytoken=refresh_token)
    )

    assert oci_token_server.counters.post_refresh == 1
    assert oci_token_server.counters.get_basic == 0


@pytest.mark.asyncio
async def test_forgotten_credentials_are_refused(
    oci_registry: Registry, oci_token_server: TokenServer
) -> None:
    # The fixture registry is private: an anonymous token grants nothing.
    oci_registry.seed_image("team/app")

    with pytest.raises(aiohttp.ClientResponseError) as failed:
        await latest_digests(oci_registry.url, ["team/app"], aociauth.ConfigFile.from_dict({}))

    assert failed.value.status == 403
    assert oci_token_server.counters.get_anonymous == 1


# Parametrizing a fixture's name replaces it for this test: here, public repositories.
@pytest.mark.parametrize("oci_public_repositories", [("library/*",)])
@pytest.mark.asyncio
async def test_anonymous_pull_of_a_public_repository(
    oci_registry: Registry, oci_token_server: TokenServer
) -> None:
    seeded = oci_registry.seed_image("library/ubuntu").manifest_digest

    digests, _ = await latest_digests(
        oci_registry.url, ["library/ubuntu"], aociauth.ConfigFile.from_dict({})
    )

    assert digests == {"library/ubuntu": seeded}
    assert oci_token_server.counters.get_anonymous == 1


@pytest.mark.asyncio
async def test_basic_registry(oci_basic_registry: Registry) -> None:
    oci_basic_registry.seed_image("team/app")

    _, stats = await latest_digests(oci_basic_registry.url, ["team/app"], login(oci_basic_registry))

    assert oci_basic_registry.counters.basic == 1
    assert stats.total_token_requests == 0


@pytest.mark.asyncio
async def test_wrong_password_is_an_error(oci_registry: Registry) -> None:
    oci_registry.seed_image("team/app")
    config = login(oci_registry, username=USER, password="wrong")

    with pytest.raises(aociauth.TokenServerError) as failed:
        await latest_digests(oci_registry.url, ["team/app"], config)

    assert failed.value.status == 401


@pytest.mark.asyncio
async def test_asks_again_when_a_picky_token_server_refuses_the_wider_scope(
    oci_registry_factory: RegistryFactory,
) -> None:
    # A token server that answers 401 to a request for more than the user may have,
    # where the spec says to grant the subset (some real ones do this).
    registry = await oci_registry_factory(auth="bearer")
    token_server = registry.token_server
    assert token_server is not None
    token_server.picky = True
    token_server.grants = {USER: {"repository:team/*": {"pull"}}}
    registry.seed_image("team/app")

    push_too = aociauth.parse_scope("repository:team/app:pull,push")
    with aociauth.with_scope(push_too):
        digests, _ = await latest_digests(registry.url, ["team/app"], login(registry))

    assert list(digests) == ["team/app"]
    assert token_server.counters.unauthorized == 1  # pull,push refused; pull alone granted
    assert token_server.counters.tokens_issued == 1
