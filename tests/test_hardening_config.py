"""Configuration entries, end to end: each credential goes where, and only where, it belongs.

tests/test_config.py proves how entries are read and looked up; these tests
follow the answers through the middleware to the servers that receive them
(security.md T-F1, T-F2, T-F6, T-F13, A5).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth import ConfigEntry, ConfigFile
from aociauth.testing import RecordingServer, Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.leaks import (
    ACCESS_TOKEN,
    PASSWORD,
    assert_clean,
    assert_no_credentials,
    exception_texts,
)
from aociauth.testing.scripted import ScriptedServer
from aociauth.testing.tls import TLSContexts

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class DefaultPortConfig:
    """Looks ``host:port`` up as ``host``, as if every loopback server were on the default port.

    Docker Hub's config key and helper URL (``https://index.docker.io/v1/``)
    apply to the port-less names; the servers here need ports.
    """

    def __init__(self, inner: ConfigFile) -> None:
        self.inner = inner

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        return await self.inner.entry_for_registry(host.rsplit(":", 1)[0])


async def test_docker_hub_credentials_go_to_auth_docker_io_by_the_built_in_pair(
    tls: TLSContexts,
) -> None:
    """``docker login``'s Hub entry, a pull from registry-1.docker.io, a realm on
    auth.docker.io (all on loopback): the password goes to auth.docker.io over
    https, because Hub's pair is built in; the registry only ever sees the token."""
    token_users: list[str | None] = []

    async def auth_docker_io(req: web.Request) -> web.StreamResponse:
        basic = req.headers.get("Authorization")
        token_users.append(aiohttp.BasicAuth.decode(basic).login if basic else None)
        return web.json_response({"token": "hub-token"})

    async with ScriptedServer(auth_docker_io, ssl_context=tls.server) as auth:

        async def registry(req: web.Request) -> web.StreamResponse:
            if req.headers.get("Authorization") == "Bearer hub-token":
                return web.Response(text="manifest")
            realm = f"https://auth.docker.io:{auth.port}/token"
            challenge = (
                f'Bearer realm="{realm}",service="registry.docker.io",'
                'scope="repository:library/alpine:pull"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})

        config = ConfigFile.from_dict(
            {"auths": {"https://index.docker.io/v1/": {"auth": b64(f"alice:{PASSWORD}")}}}
        )
        async with (
            ScriptedServer(registry, ssl_context=tls.server) as reg,
            loopback_client(DefaultPortConfig(config), ssl_context=tls.client) as (mw, session),
        ):
            url = reg.url_for("/v2/library/alpine/manifests/latest", "registry-1.docker.io")
            async with session.get(url) as r:
                assert (r.status, await r.text()) == (200, "manifest")
    assert token_users == ["alice"]
    assert mw.stats.anonymous_realm_downgrades == 0
    assert [s.header("Authorization") for s in reg.requests] == [[], ["Bearer hub-token"]]


async def test_a_bad_entry_fails_its_registry_only_and_says_so_without_its_text() -> None:
    async def registry(req: web.Request) -> web.StreamResponse:
        if req.headers.get("Authorization", "").startswith("Basic "):
            return web.Response(text="ok")
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async with ScriptedServer(registry) as good, ScriptedServer(registry) as bad:
        bad_host, good_host = f"bad.test:{bad.port}", f"reg.test:{good.port}"
        # Not base64: one character outside the alphabet, around a secret.
        config = ConfigFile.from_dict(
            {
                "auths": {
                    bad_host: {"auth": b64(f"alice:{PASSWORD}")[:-4] + "!!!!"},
                    good_host: {"auth": b64(f"alice:{PASSWORD}")},
                }
            }
        )
        async with loopback_client(config) as (mw, session):
            for _ in range(2):
                with pytest.raises(aociauth.CredentialLookupError) as ei:
                    await asyncio.wait_for(
                        session.get(f"http://{bad_host}/v2/a/manifests/x"), BOUND
                    )
                assert isinstance(ei.value, aiohttp.ClientError)
                assert (ei.value.registry, ei.value.step) == (bad_host, "config")
                assert isinstance(ei.value.__cause__, aociauth.ConfigError)
                assert_clean(exception_texts(ei.value), b64(f"alice:{PASSWORD}")[:-4])
                async with session.get(f"http://{good_host}/v2/a/manifests/x") as r:
                    assert r.status == 200
    # Nothing at all went to the registry whose entry is bad, and its lookup
    # failure is remembered, as in the original: one lookup per registry.
    assert bad.requests == []
    assert mw.stats.config_lookups == 2


async def test_acr_identity_token_takes_the_refresh_grant_never_the_zero_guid() -> None:
    """``az acr login`` writes a zero-GUID ``auth`` with an empty password and an
    ``identitytoken``: the token request is the OAuth2 refresh grant, and Basic
    with the GUID is never sent anywhere (security.md T-F6)."""
    async with (
        TokenServer(users={}) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
    ):
        idt = ts.issue_refresh_token("alice")
        digest = reg.seed_blob("team/app", b"blob")
        guid = "00000000-0000-0000-0000-000000000000"
        config = ConfigFile.from_dict(
            {"auths": {reg.host: {"auth": b64(f"{guid}:"), "identitytoken": idt}}}
        )
        async with (
            loopback_client(config) as (_, session),
            session.get(f"{reg.url}/v2/team/app/blobs/{digest}") as r,
        ):
            assert r.status == 200
    assert [
        (t.kind, t.form.get("refresh_token"), t.form.get("client_id") != "") for t in ts.requests
    ] == [("post_refresh", idt, True)]
    assert ts.counters.get_basic == 0
    assert reg.counters.basic == 0
    assert [q.subject for q in reg.requests if q.status == 200] == ["alice"]


@pytest.fixture
async def cdn() -> AsyncIterator[RecordingServer]:
    async with RecordingServer() as server:
        yield server


@pytest.mark.parametrize("accepted", [True, False])
async def test_registry_token_goes_to_its_registry_only(
    cdn: RecordingServer, accepted: bool
) -> None:
    """``registrytoken`` is sent as Bearer to the registry's origin; not to the CDN its blobs
    redirect to, and not to its token server, even when the registry refuses it (T-F13)."""
    token_requests: list[str] = []

    async def tokens(req: web.Request) -> web.StreamResponse:
        token_requests.append(f"{list(req.headers.items())} {req.query_string} {await req.text()}")
        return web.json_response({"token": "from-the-realm"})

    good = {"Bearer from-the-realm"} | ({f"Bearer {ACCESS_TOKEN}"} if accepted else set())

    async with ScriptedServer(tokens) as ts:

        async def registry(req: web.Request) -> web.StreamResponse:
            if req.headers.get("Authorization") in good:
                location = f"http://cdn.test:{cdn.port}/b?X-Amz-Signature=1"
                return web.Response(status=307, headers={"Location": location})
            challenge = (
                f'Bearer realm="http://reg.test:{ts.port}/token",service="s",'
                'scope="repository:team/app:pull",error="invalid_token"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})

        async with ScriptedServer(registry) as reg:
            config = ConfigFile.from_dict(
                {"auths": {f"reg.test:{reg.port}": {"registrytoken": ACCESS_TOKEN}}}
            )
            url = reg.url_for("/v2/team/app/blobs/sha256:abc", "reg.test")
            async with loopback_client(config) as (_, session), session.get(url) as r:
                assert r.status == 404  # the CDN's default answer
    sent = [s.header("Authorization") for s in reg.requests]
    if accepted:
        assert sent == [[f"Bearer {ACCESS_TOKEN}"]]
        assert token_requests == []
    else:
        assert sent == [[f"Bearer {ACCESS_TOKEN}"], ["Bearer from-the-realm"]]
        assert len(token_requests) == 1
        assert ACCESS_TOKEN not in token_requests[0]
    assert len(cdn.requests) == 1
    assert_no_credentials(cdn.requests, where="the CDN")


async def test_a_foreign_config_error_is_scrubbed() -> None:
    """A Config of the user's own may raise anything; what the caller's error says is scrubbed."""

    class Vault:
        async def entry_for_registry(self, host: str) -> ConfigEntry:
            raise RuntimeError(f"vault lookup failed: password={PASSWORD} token: {ACCESS_TOKEN}")

    async def registry(req: web.Request) -> web.StreamResponse:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async with ScriptedServer(registry) as reg, loopback_client(Vault()) as (_, session):
        with pytest.raises(aociauth.CredentialLookupError) as ei:
            await asyncio.wait_for(session.get(reg.url_for("/v2/a/manifests/x")), BOUND)
    assert PASSWORD not in str(ei.value)
    assert ACCESS_TOKEN not in str(ei.value)
    assert PASSWORD not in repr(ei.value)
    # The rest of the message stays, to say what went wrong.
    assert "vault lookup failed" in str(ei.value)
