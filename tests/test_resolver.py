"""Realm names are judged by the addresses they resolve to, not only by their text.

No real DNS is used: the inner resolver is a table, swapped in for aiohttp's default.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.web import Request

import aociauth
from aociauth import ConfigEntry
from aociauth import _resolver as resolver_module
from aociauth._resolver import RealmAddressError, RealmGuardResolver, loopback_allowed
from aociauth.testing.client import TableResolver
from aociauth.testing.gotest import HTTPError, start
from aociauth.testing.pytest_plugin import ClientFactory
from aociauth.testing.scripted import ConfigFunc

TABLE = {
    "metadata.test": "169.254.169.254",
    "metadata6.test": "fe80::1",
    "mapped.test": "::ffff:169.254.169.254",
    "zero.test": "0.0.0.0",  # noqa: S104 (an address a name resolves to, not a bind)
    "self.test": "127.0.0.1",
    "corp.test": "10.1.2.3",
    "public.test": "93.184.216.34",
}


@pytest.mark.parametrize(
    ("name", "loopback_ok", "refused"),
    [
        ("metadata.test", True, "link-local"),
        ("metadata6.test", True, "link-local"),
        ("mapped.test", True, "link-local"),
        ("zero.test", True, "unspecified"),
        ("self.test", False, "loopback"),
        ("self.test", True, ""),
        ("corp.test", False, ""),
        ("public.test", False, ""),
    ],
)
async def test_guard_refuses_forbidden_addresses(
    name: str, loopback_ok: bool, refused: str
) -> None:
    guard = RealmGuardResolver(TableResolver(TABLE))
    token = loopback_allowed.set(loopback_ok)
    try:
        if refused:
            with pytest.raises(RealmAddressError, match=refused):
                await guard.resolve(name, 443)
        else:
            assert [r["host"] for r in await guard.resolve(name, 443)] == [TABLE[name]]
    finally:
        loopback_allowed.reset(token)


@pytest.fixture
def table_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolver_module, "DefaultResolver", lambda: TableResolver(TABLE))


async def test_a_realm_name_resolving_to_a_metadata_address_gets_no_request(
    stack: list[object], oci_client: ClientFactory, table_dns: None
) -> None:
    async def gate(req: Request) -> None:
        raise HTTPError(
            401,
            {
                "Www-Authenticate": 'Bearer realm="http://metadata.test/latest/",scope="repository:a:pull"'
            },
        )

    s = await start(gate)
    stack.append(s)
    # The middleware's own token session, as in production: its guard is the subject.
    config = ConfigFunc(lambda h: ConfigEntry(username="u", password="p"))
    session = await oci_client(config, resolve_names=False)
    with pytest.raises(aociauth.RealmPolicyError, match="link-local") as ei:
        await asyncio.wait_for(session.get(s.url("/v2/a/manifests/x")), 10)
    assert isinstance(ei.value, aiohttp.ClientError)
    assert len(s.target_hits) == 1


async def test_a_registry_on_this_machine_may_have_its_token_server_there_too(
    stack: list[object], oci_client: ClientFactory, table_dns: None
) -> None:
    async def auth(req: Request, form: object) -> dict[str, object]:
        return {"token": "tok"}

    async def gate(req: Request) -> None:
        if req.headers.get("Authorization") != "Bearer tok":
            realm = f"http://self.test:{s.auth.port}/token"  # type: ignore[union-attr]
            raise HTTPError(
                401, {"Www-Authenticate": f'Bearer realm="{realm}",scope="repository:a:pull"'}
            )

    s = await start(gate, auth)  # type: ignore[arg-type]
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda h: ConfigEntry()), resolve_names=False)
    async with session.post(s.url("/test"), data=b"test body") as r:
        assert r.status == 200
    assert len(s.auth_hits) == 1
    # The guard reset its permission after the request.
    assert loopback_allowed.get() is False
