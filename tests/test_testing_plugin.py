"""The pytest plugin's fixtures give running servers, stop them, and load cheaply."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import aiohttp
import pytest

from aociauth.testing.pytest_plugin import PASSWORD, USER, RegistryFactory
from aociauth.testing.registry import Registry
from aociauth.testing.tokenserver import TokenServer

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
