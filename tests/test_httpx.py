"""What the httpx adapter does where httpx differs from aiohttp.

The flows themselves are proved, adapter by adapter, in test_scenarios.py;
here: where our credential shows after the flow, the caller's own header, a
body that cannot be sent twice, cookies, the realm address check, bounds,
redirects to another origin, closing, and refresh ahead on trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import anyio.from_thread
import httpx
import pytest

from aociauth import (
    AuthRequestError,
    BodyNotReplayableError,
    ConfigFile,
    StdTransportParams,
    TokenServerError,
)
from aociauth._resolver import RealmAddressError, loopback_allowed
from aociauth.httpx import RegistryAuth, _RealmGuardTransport
from aociauth.testing import RecordingServer, Registry, TokenServer
from aociauth.testing.adapters import Harness

USERS = {"alice": "alice-password"}
MANIFEST = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def alice(reg: Registry, **params: object) -> StdTransportParams:
    config = ConfigFile.from_dict(
        {"auths": {reg.host: {"username": "alice", "password": USERS["alice"]}}}
    )
    return StdTransportParams(config=config, **params)  # type: ignore[arg-type]


async def test_our_credential_is_gone_from_the_request_and_its_redirect() -> None:
    async with (
        TokenServer(users=USERS) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
        RegistryAuth(alice(reg)) as auth,
        httpx.AsyncClient(auth=auth) as client,
    ):
        image = reg.seed_image("team/app", "v1")
        reg.blob_redirect = f"{reg.url}/elsewhere"  # same origin: httpx keeps Authorization
        r = await client.get(f"{reg.url}/v2/team/app/manifests/v1", headers=MANIFEST)
        assert r.status_code == 200
        assert "Authorization" not in r.request.headers
        # The 401 went by with our credential gone too (it is the same request object).
        assert [h.status_code for h in r.history] == [401]
        r = await client.get(f"{reg.url}/v2/team/app/blobs/{image.config_digest}")
        assert r.status_code == 307
        assert reg.requests[-1].auth_scheme == "Bearer"
        assert r.next_request is not None
        assert "Authorization" not in r.next_request.headers
        assert "Authorization" not in r.request.headers


async def test_the_callers_authorization_is_kept_and_never_replaced_by_basic() -> None:
    async with (
        Registry(auth="basic", users=USERS) as reg,
        RegistryAuth(alice(reg)) as auth,
        httpx.AsyncClient(auth=auth) as client,
    ):
        reg.seed_image("team/app", "v1")
        mine = "Basic bWFsbG9yeTpub3Bl"
        r = await client.get(
            f"{reg.url}/v2/team/app/manifests/v1", headers={**MANIFEST, "Authorization": mine}
        )
        assert r.status_code == 401
        assert reg.counters.requests == 1
        assert r.request.headers.get_list("Authorization") == [mine]
        # Without a header of its own, the same request is answered with alice's.
        r = await client.get(f"{reg.url}/v2/team/app/manifests/v1", headers=MANIFEST)
        assert r.status_code == 200
        assert "Authorization" not in r.request.headers


async def test_a_streaming_body_answered_401_is_refused_not_resent_empty() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"layer bytes"

    async with (
        TokenServer(users=USERS) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
        RegistryAuth(alice(reg)) as auth,
        httpx.AsyncClient(auth=auth) as client,
    ):
        with pytest.raises(BodyNotReplayableError) as info:
            await client.post(f"{reg.url}/v2/team/app/blobs/uploads/", content=body())
        assert info.value.step == "retry"
        assert reg.counters.requests == 1
        assert ts.counters.requests == 0
        # A body that can be sent twice is sent twice.
        r = await client.post(f"{reg.url}/v2/team/other/blobs/uploads/", content=b"bytes")
        assert r.status_code == 202


@pytest.mark.parametrize("own_client", [False, True])
async def test_token_requests_carry_no_cookie_and_leave_none_behind(own_client: bool) -> None:
    async with (
        TokenServer(users=USERS) as ts,
        RecordingServer() as realm,
        Registry(auth="bearer", token_server=ts, realm=f"{realm.url}/token") as reg,
    ):
        realm.set_response("/token", status=503, headers={"Set-Cookie": "lb=sticky; Path=/"})
        # An ordinary client keeps the cookie (so the assertions below can fail).
        async with httpx.AsyncClient() as plain:
            await plain.get(f"{realm.url}/token")
            await plain.get(f"{realm.url}/token")
            assert realm.requests[-1].headers.get("Cookie") == "lb=sticky"
            realm.requests.clear()
        mine = httpx.AsyncClient() if own_client else None
        try:
            async with (
                RegistryAuth(alice(reg, retry_backoff=0.0), client=mine) as auth,
                httpx.AsyncClient(auth=auth) as client,
            ):
                with pytest.raises(TokenServerError) as info:
                    await client.get(f"{reg.url}/v2/team/app/manifests/v1", headers=MANIFEST)
                assert info.value.status == 503
                assert list(auth._token_client().cookies.jar) == []
            assert [r.path for r in realm.requests] == ["/token"] * 3
            assert [r.headers.get("Cookie") for r in realm.requests] == [None] * 3
            if mine is not None:
                assert list(mine.cookies.jar) == []
        finally:
            if mine is not None:
                await mine.aclose()


async def test_the_owned_transport_judges_the_address_a_realm_name_resolves_to() -> None:
    async with RecordingServer() as srv:
        srv.set_response("/token", body="{}")
        url = f"http://localhost:{srv.port}/token"
        transport = _RealmGuardTransport(httpx.AsyncHTTPTransport())
        async with httpx.AsyncClient(transport=transport) as client:
            # The registry is elsewhere: a realm on this machine is a target, not a neighbour.
            with pytest.raises(RealmAddressError, match="loopback"):
                await client.get(url)
            assert srv.requests == []
            # The registry is on this machine too: its token server may be.
            allowed = loopback_allowed.set(True)
            try:
                r = await client.get(url)
            finally:
                loopback_allowed.reset(allowed)
        assert r.status_code == 200
        assert [q.headers["Host"] for q in srv.requests] == [f"localhost:{srv.port}"]


async def test_the_owned_client_guards_addresses_unless_private_realms_are_allowed() -> None:
    from aociauth.realm import RealmPolicy

    guarded = RegistryAuth()
    trusting = RegistryAuth(StdTransportParams(realm_policy=RealmPolicy(allow_private_realms=True)))
    try:
        assert isinstance(guarded._token_client()._transport, _RealmGuardTransport)
        assert not isinstance(trusting._token_client()._transport, _RealmGuardTransport)
    finally:
        await guarded.aclose()
        await trusting.aclose()


async def test_a_token_body_past_the_cap_fails_without_retries() -> None:
    async with (
        TokenServer(users=USERS) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
        RegistryAuth(alice(reg, max_token_response=64)) as auth,
        httpx.AsyncClient(auth=auth) as client,
    ):
        with pytest.raises(TokenServerError, match="larger than 64 bytes"):
            await client.get(f"{reg.url}/v2/team/app/manifests/v1", headers=MANIFEST)
        assert ts.counters.get_basic == 1
        assert auth.stats.token_requests == {"get_basic": 1}


async def test_a_challenge_from_the_origin_a_redirect_went_to_is_not_answered() -> None:
    async with (
        TokenServer(users=USERS) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
        RecordingServer() as cdn,
        RegistryAuth(alice(reg)) as auth,
        httpx.AsyncClient(auth=auth, follow_redirects=True) as client,
    ):
        image = reg.seed_image("team/app", "v1")
        reg.blob_redirect = cdn.url
        challenge = f'Bearer realm="{cdn.url}/token",service="cdn",scope="repository:team/app:pull"'
        cdn.set_response(
            f"/{image.config_digest}", status=401, headers={"WWW-Authenticate": challenge}
        )
        r = await client.get(f"{reg.url}/v2/team/app/manifests/v1", headers=MANIFEST)
        assert r.status_code == 200
        r = await client.get(f"{reg.url}/v2/team/app/blobs/{image.config_digest}")
        assert r.status_code == 401
        assert [h.status_code for h in r.history] == [307]
        assert [q.path for q in cdn.requests] == [f"/{image.config_digest}"]
        assert cdn.credentials_seen() == []
        assert ts.counters.requests == 1
        assert auth.stats.responses_401 == 1


async def test_the_denied_answer_reads_as_a_stream_too() -> None:
    async with (
        TokenServer(users=USERS, grants={"alice": {"repository:team/*": {"pull"}}}) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
        RegistryAuth(alice(reg)) as auth,
        httpx.AsyncClient(auth=auth) as client,
    ):
        reg.seed_image("secret/app", "v1")
        url = f"{reg.url}/v2/secret/app/manifests/v1"
        async with client.stream("GET", url, headers=MANIFEST) as r:
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
        assert r.status_code == 403
        assert "WWW-Authenticate" not in r.headers
        assert r.headers["Content-Type"] == "application/json"
        assert json.loads(raw)["errors"][0]["code"] == "DENIED"
        assert auth.stats.rewritten_403 == 1


async def test_a_closed_auth_refuses_requests_and_a_sync_client_is_refused() -> None:
    auth = RegistryAuth()
    await auth.aclose()
    async with httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(AuthRequestError) as info:
            await client.get("http://127.0.0.1:9/v2/")
        assert info.value.step == "closed"
    with httpx.Client(auth=RegistryAuth()) as sync, pytest.raises(AuthRequestError) as info:
        sync.get("http://127.0.0.1:9/v2/")
    assert info.value.step == "client"


def test_refresh_ahead_runs_in_the_request_on_trio() -> None:
    # On trio no task may outlive its caller: the request that finds its token due
    # refreshes it before it returns, so the count is there as soon as it does.
    async def main(env: Harness) -> tuple[int, int, int]:
        ts = await env.serve(TokenServer(users=USERS))
        reg = await env.serve(Registry(auth="bearer", token_server=ts))
        try:
            reg.seed_image("team/app", "v1")
            statuses = []
            async with (
                RegistryAuth(alice(reg, refresh_fraction=1.0)) as auth,
                httpx.AsyncClient(auth=auth) as client,
            ):
                for _ in range(2):
                    r = await client.get(f"{reg.url}/v2/team/app/manifests/v1", headers=MANIFEST)
                    statuses.append(r.status_code)
                tokens = ts.counters.get_basic
            assert statuses == [200, 200]
            return tokens, auth.stats.refreshes_ahead, reg.counters.unauthorized
        finally:
            await env.stop()

    # The servers are aiohttp's: they run on asyncio in a thread, the client on trio.
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        got = anyio.run(main, Harness("httpx", portal), backend="trio")
    assert got == (2, 1, 1)
