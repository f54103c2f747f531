"""The pytest plugin's fixtures give running servers, stop them, and load cheaply."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import aiohttp
import pytest

from aociauth import ConfigFile, StdTransportParams, new_std_transport
from aociauth.testing.pytest_plugin import PASSWORD, USER, RegistryFactory, fixture_grants
from aociauth.testing.registry import Registry
from aociauth.testing.tokenserver import Access, TokenServer

pytest_plugins = ["pytester"]


async def test_bearer_registry_fixture_is_backed_by_the_token_server_fixture(
    oci_registry: Registry, oci_token_server: TokenServer
) -> None:
    assert oci_registry.running
    assert oci_registry.token_server is oci_token_server
    assert oci_token_server.users == {USER: PASSWORD}
    async with aiohttp.ClientSession() as session, session.get(f"{oci_registry.url}/v2/") as r:
        assert r.status == 401
        assert oci_token_server.realm in r.headers["WWW-Authenticate"]


async def test_basic_and_open_registry_fixtures(
    oci_basic_registry: Registry, oci_open_registry: Registry
) -> None:
    assert oci_basic_registry.auth == "basic"
    assert oci_basic_registry.users == {USER: PASSWORD}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{oci_basic_registry.url}/v2/") as resp:
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="basic-realm"'
        async with session.get(f"{oci_open_registry.url}/v2/") as resp:
            assert resp.status == 200


async def test_factory_starts_registries_with_their_own_token_server(
    oci_registry_factory: RegistryFactory,
) -> None:
    first = await oci_registry_factory(auth="bearer", shuffle_challenges=True)
    second = await oci_registry_factory(auth="bearer", token_server=first.token_server)
    basic = await oci_registry_factory(auth="basic")
    assert first.token_server is not None
    assert first.token_server.running
    assert second.token_server is first.token_server
    assert basic.users == {USER: PASSWORD}
    assert len({first.port, second.port, basic.port}) == 3


async def pull_status(registry: Registry, repository: str, config: ConfigFile | None) -> int:
    """The status of a manifest GET through the middleware (``config`` None: anonymous)."""
    mw = new_std_transport(StdTransportParams(config=config))
    url = f"{registry.url}/v2/{repository}/manifests/v1"
    # Like distribution, the registry answers 404 to a GET that does not accept OCI manifests.
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    async with (
        mw,
        aiohttp.ClientSession(middlewares=[mw]) as session,
        session.get(url, headers=accept) as r,
    ):
        return r.status


def as_user(registry: Registry) -> ConfigFile:
    return ConfigFile.from_dict(
        {"auths": {registry.host: {"username": USER, "password": PASSWORD}}}
    )


async def test_the_fixture_registry_is_private_by_default(
    oci_registry: Registry, oci_token_server: TokenServer
) -> None:
    oci_registry.seed_image("team/app", "v1")
    oci_registry.seed_image("library/ubuntu", "v1")
    # Anonymous: a token is issued, granting nothing, so the registry refuses it.
    assert await pull_status(oci_registry, "team/app", None) == 403
    assert await pull_status(oci_registry, "library/ubuntu", None) == 403
    assert oci_token_server.counters.get_anonymous == 2
    assert all(r.subject is None for r in oci_token_server.requests)
    assert await pull_status(oci_registry, "team/app", as_user(oci_registry)) == 200
    assert oci_token_server.counters.get_basic == 1
    assert oci_token_server.grants == fixture_grants()


@pytest.mark.parametrize("oci_public_repositories", [("library/*",)])
async def test_public_repositories_are_named_by_overriding_a_fixture(
    oci_registry: Registry, oci_registry_factory: RegistryFactory
) -> None:
    other = await oci_registry_factory(auth="bearer")
    for registry in (oci_registry, other):
        registry.seed_image("team/app", "v1")
        registry.seed_image("library/ubuntu", "v1")
        assert await pull_status(registry, "library/ubuntu", None) == 200
        assert await pull_status(registry, "team/app", None) == 403


def test_the_fixture_user_may_do_anything_anonymous_only_pull_public() -> None:
    grants = fixture_grants(["library/*"])
    server = TokenServer(grants=grants)
    for resource_type, name, action in [
        ("repository", "team/app", "pull"),
        ("repository", "team/app", "push"),
        ("repository", "team/app", "delete"),
        ("registry", "catalog", "*"),
    ]:
        assert server.allowed(USER, Access(resource_type, name, action))
        assert not server.allowed(None, Access(resource_type, name, action))
    assert server.allowed(None, Access("repository", "library/ubuntu", "pull"))
    assert not server.allowed(None, Access("repository", "library/ubuntu", "push"))
    assert not server.allowed("mallory", Access("repository", "team/app", "pull"))


def test_fixtures_stop_their_servers(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(
        textwrap.dedent(
            """
            import socket

            import pytest

            ports = []

            async def test_uses_everything(
                oci_registry, oci_basic_registry, oci_open_registry, oci_registry_factory
            ):
                extra = await oci_registry_factory(auth="bearer")
                ports.extend(
                    [
                        oci_registry.port,
                        oci_registry.token_server.port,
                        oci_basic_registry.port,
                        oci_open_registry.port,
                        extra.port,
                        extra.token_server.port,
                    ]
                )

            def test_every_port_is_closed():
                assert len(ports) == 6
                for port in ports:
                    with pytest.raises(ConnectionRefusedError):
                        socket.create_connection(("127.0.0.1", port), timeout=5).close()
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_fixtures_skip_without_pytest_asyncio(pytester: pytest.Pytester) -> None:
    # A package that shadows the installed pytest-asyncio, as if it were absent.
    shadow = pytester.mkpydir("pytest_asyncio")
    (shadow / "__init__.py").write_text('raise ImportError("pytest-asyncio is absent")\n')
    pytester.makepyfile(
        """
        def test_needs_a_registry(oci_registry):
            raise AssertionError("must not run")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*oci_registry fixture needs pytest-asyncio*"])


def test_loading_the_plugin_imports_neither_servers_nor_cryptography() -> None:
    code = textwrap.dedent(
        """
        import sys
        import aociauth.testing.pytest_plugin
        loaded = [
            name
            for name in ("cryptography", "aociauth.testing.registry", "aociauth.testing._jwt")
            if name in sys.modules
        ]
        print(loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
