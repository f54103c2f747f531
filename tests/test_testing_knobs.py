"""The testing servers' knobs for registries that are not distribution (the zoo's building blocks).

TLS and the tap of every exchange; the token server's path, one-scope
reading and opaque tokens; the registry's co-hosted token endpoint, signed
URL shapes, ECR's Basic challenge and expiry, Quay's scope-less challenge,
Harbor's mixed challenges and Docker Hub's rate limit.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from aociauth.testing._http import Exchange
from aociauth.testing.registry import (
    DOCKER_HUB_RATE_LIMIT_MESSAGE,
    ECR_EXPIRED_MESSAGE,
    OCI_MANIFEST,
    BlobRedirectStyle,
    RecordingServer,
    Registry,
)
from aociauth.testing.tls import make_tls
from aociauth.testing.tokenserver import TokenServer

ALICE = {"alice": "secret-password"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_servers_speak_https_and_tap_every_exchange(session: aiohttp.ClientSession) -> None:
    tls = make_tls(["registry.test"])
    tap: list[Exchange] = []
    async with TokenServer(users=ALICE, ssl_context=tls.server, tap=tap) as ts:
        assert ts.url.startswith("https://127.0.0.1:")
        url = f"{ts.realm}?scope=repository:a/b:pull&service={ts.service}"
        async with session.get(url, headers=basic("alice", "secret-password"), ssl=tls.client) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url)  # the system's CAs do not know the throwaway one
    assert len(tap) == 1
    (exchange,) = tap
    assert (exchange.host, exchange.method, exchange.path, exchange.status) == (
        "127.0.0.1",
        "GET",
        "/token",
        200,
    )
    assert exchange.headers["Authorization"].startswith("Basic ")
    assert "secret-password" not in repr(exchange)


async def test_token_path_and_one_scope_reading(session: aiohttp.ClientSession) -> None:
    async with TokenServer(users=ALICE, path="/jwt/auth", scope_reading="last") as ts:
        assert ts.realm.endswith("/jwt/auth")
        query = "scope=repository:a/one:pull&scope=repository:a/two:pull&service=" + ts.service
        async with session.get(f"{ts.url}/jwt/auth?{query}") as r:
            token = (await r.json())["token"]
        async with session.get(f"{ts.url}/token?{query}") as r:
            assert r.status == 404
        ts.scope_reading = "first"
        async with session.get(f"{ts.url}/jwt/auth?{query}") as r:
            first = (await r.json())["token"]
    assert [a["name"] for a in ts.verify(token)["access"]] == ["a/two"]
    assert [a["name"] for a in ts.verify(first)["access"]] == ["a/one"]


async def test_opaque_tokens_are_known_to_their_server_only_until_revoked(
    session: aiohttp.ClientSession,
) -> None:
    ts = TokenServer(opaque_tokens=True, remember_tokens=True, token_field="token")
    async with ts, session.get(f"{ts.realm}?scope=repository:a/b:pull") as r:
        body = await r.json()
    token = body["token"]
    assert "access_token" not in body
    assert token.count(".") == 0  # not a JWT: a client cannot read its grants
    assert ts.verify(token)["access"] == [
        {"type": "repository", "name": "a/b", "actions": ["pull"]}
    ]
    assert token in ts.issued
    ts.revoke_opaque_tokens()
    with pytest.raises(ValueError, match="opaque"):
        ts.verify(token)


async def test_a_registry_serves_its_token_endpoint_on_its_own_host(
    session: aiohttp.ClientSession,
) -> None:
    ts = TokenServer(users=ALICE, path="/oauth2/token", service="myregistry.azurecr.io")
    async with Registry(
        auth="bearer", token_server=ts, token_path="/oauth2/token", realm="https://x/oauth2/token"
    ) as reg:
        reg.seed_image("team/app")
        url = f"{reg.url}/oauth2/token?scope=repository:team/app:pull&service={ts.service}"
        async with session.get(url, headers=basic("alice", "secret-password")) as r:
            token = (await r.json())["token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST}
        async with session.get(f"{reg.url}/v2/team/app/manifests/latest", headers=headers) as r:
            assert r.status == 200
    assert ts.counters.get_basic == 1
    assert reg.counters.requests == 1  # the token request is the token server's, not the registry's


async def test_ecr_basic_challenge_and_its_expired_token_403(
    session: aiohttp.ClientSession,
) -> None:
    async with Registry(
        auth="basic", users={"AWS": "new"}, basic_realm="https://ecr.test/", basic_service="ecr"
    ) as reg:
        reg.expired_passwords.add("old")
        async with session.get(f"{reg.url}/v2/") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Basic realm="https://ecr.test/",service="ecr"'
        async with session.get(f"{reg.url}/v2/", headers=basic("AWS", "old")) as r:
            assert r.status == 403
            assert "WWW-Authenticate" not in r.headers
            body = await r.json()
        async with session.get(f"{reg.url}/v2/", headers=basic("AWS", "new")) as r:
            assert r.status == 200
    assert body["errors"][0] == {"code": "DENIED", "message": ECR_EXPIRED_MESSAGE}


async def test_quay_challenge_has_no_scope(session: aiohttp.ClientSession) -> None:
    async with TokenServer() as ts, Registry(auth="bearer", token_server=ts) as reg:
        async with session.get(f"{reg.url}/v2/a/b/manifests/v1") as r:
            assert "scope=" in r.headers["WWW-Authenticate"]
        reg.challenge_scope = False
        async with session.get(f"{reg.url}/v2/a/b/manifests/v1") as r:
            assert r.status == 401
            assert "scope=" not in r.headers["WWW-Authenticate"]


async def test_harbor_takes_basic_and_challenges_a_refused_token_with_basic(
    session: aiohttp.ClientSession,
) -> None:
    async with (
        TokenServer() as ts,
        Registry(
            auth="bearer",
            token_server=ts,
            users={"robot$acme+ci": "pw"},
            basic_realm="harbor",
            accept_basic=True,
            basic_challenge_after_refusal=True,
        ) as reg,
    ):
        reg.seed_image("acme/app")
        url = f"{reg.url}/v2/acme/app/manifests/latest"
        accept = {"Accept": OCI_MANIFEST}
        async with session.get(url, headers=accept) as r:
            assert r.headers["WWW-Authenticate"].startswith("Bearer ")
        async with session.get(url, headers={**accept, "Authorization": "Bearer stale"}) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Basic realm="harbor"'
        async with session.get(url, headers={**accept, **basic("robot$acme+ci", "pw")}) as r:
            assert r.status == 200
        assert reg.requests[-1].subject == "robot$acme+ci"


async def test_docker_hub_rate_limit_counts_manifest_gets_and_answers_429(
    session: aiohttp.ClientSession,
) -> None:
    async with Registry(pull_limit=2, pull_window=21600) as reg:
        reg.seed_image("library/alpine")
        url = f"{reg.url}/v2/library/alpine/manifests/latest"
        accept = {"Accept": OCI_MANIFEST}
        remaining = []
        for _ in range(2):
            async with session.get(url, headers=accept) as r:
                assert r.status == 200
                assert r.headers["RateLimit-Limit"] == "2;w=21600"
                remaining.append(r.headers["RateLimit-Remaining"])
        async with session.head(url, headers=accept) as r:
            assert r.status == 200  # a HEAD is not a pull
        async with session.get(url, headers=accept) as r:
            assert r.status == 429
            assert r.headers["RateLimit-Remaining"] == "0;w=21600"
            body = json.loads(await r.read())
    assert remaining == ["1;w=21600", "0;w=21600"]
    assert body["errors"] == [{"code": "TOOMANYREQUESTS", "message": DOCKER_HUB_RATE_LIMIT_MESSAGE}]


@pytest.mark.parametrize(
    ("style", "keys"),
    [
        ("s3", {"X-Amz-Signature", "X-Amz-Credential"}),
        ("gcs", {"GoogleAccessId", "Expires", "Signature"}),
        ("azure", {"se", "sig", "sp", "sv"}),
        ("cloudfront", {"Expires", "Signature", "Key-Pair-Id"}),
        ("cloudflare", {"verify"}),
    ],
)
async def test_signed_blob_urls_take_their_service_shape_and_the_cdn_serves_them(
    session: aiohttp.ClientSession, style: BlobRedirectStyle, keys: set[str]
) -> None:
    async with Registry(blob_redirect_style=style) as reg, RecordingServer(blobs=reg.blobs) as cdn:
        reg.blob_redirect = f"{cdn.url}/bucket"
        image = reg.seed_image("team/app")
        layer = image.layer_digests[0]
        url = f"{reg.url}/v2/team/app/blobs/{layer}"
        async with session.get(url, allow_redirects=False) as r:
            assert r.status == 307
            location = r.headers["Location"]
        async with session.get(url) as r:
            assert r.status == 200
            data = await r.read()
    assert keys <= set(parse_qs(urlsplit(location).query))
    assert data == reg.blobs[layer]
    assert len(cdn.requests) == 1
