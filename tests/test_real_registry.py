"""The middleware against the reference registry: Debian's docker-registry (distribution 2.8).

Every request goes through ``aiohttp.ClientSession(middlewares=[new_std_transport(...)])``
with credentials from a ``ConfigFile``, once against a registry taking Basic
credentials (htpasswd) and once against one taking bearer tokens from the
in-process :class:`~aociauth.testing.TokenServer`. What the design promises is
proven by counting: the registry's 401s as the middleware saw them, and the
token requests as the token server received them. Each test ends by checking
that its session holds no connection.

One registry of each kind serves the whole module; every test uses repositories
of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio

import aociauth
from aociauth import AuthMiddleware, Scope, StdTransportParams, new_scope, parse_scope
from aociauth.testing import TokenServer
from aociauth.testing.distribution import DistributionRegistry, find_binary

pytestmark = [pytest.mark.registry, pytest.mark.asyncio(loop_scope="module")]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ALICE = "alice"
ALICE_PASSWORD = "alice-password"  # also the htpasswd fixture's, tests/conftest.py
#: The original's 403 message; ours goes on to say as whom the token was asked for.
DENIED = "unauthorized response with freshly acquired auth token; "
# Alice may push and pull team/* and public/*, and only pull readonly/*; anyone may
# pull public/*; nobody may delete. distribution wants the catalog's action literally "*".
GRANTS: Mapping[str | None, Mapping[str, set[str]]] = {
    ALICE: {
        "repository:team/*": {"pull", "push"},
        "repository:public/*": {"pull", "push"},
        "repository:readonly/*": {"pull"},
        "registry:catalog": {"*"},
    },
    None: {"repository:public/*": {"pull"}},
}
BULK = 100


# --- registries ------------------------------------------------------------------


@dataclass
class TokenSetup:
    """A real registry whose realm is an in-process token server."""

    ts: TokenServer
    registry: DistributionRegistry


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def token_setup() -> AsyncIterator[TokenSetup]:
    if find_binary() is None:
        pytest.skip("docker-registry (distribution 2.8) is not on PATH")
    async with TokenServer(users={ALICE: ALICE_PASSWORD}, grants=GRANTS) as ts:
        issuer = ts.issuer
        async with DistributionRegistry(
            auth="token",
            realm=ts.realm,
            service=ts.service,
            issuer=issuer.issuer,
            rootcertbundle=issuer.root_cert_pem,
        ) as registry:
            yield TokenSetup(ts, registry)


@pytest.fixture
def tokens(token_setup: TokenSetup) -> TokenSetup:
    """The token registry, with the token server's counters zeroed for this test."""
    token_setup.ts.reset_counters()
    return token_setup


def alice_config(
    registry: DistributionRegistry, password: str = ALICE_PASSWORD
) -> aociauth.ConfigFile:
    return aociauth.ConfigFile.from_dict(
        {"auths": {registry.host: {"username": ALICE, "password": password}}}
    )


def no_credentials() -> aociauth.ConfigFile:
    return aociauth.ConfigFile.from_dict({"auths": {}})


def assert_no_connection_held(session: aiohttp.ClientSession) -> None:
    connector = session.connector
    assert connector is not None
    # aiohttp has no public count of the connections handed out and not yet released.
    assert len(connector._acquired) == 0, "a response was left unreleased"


@contextlib.asynccontextmanager
async def client(
    config: aociauth.Config, *, token_session: aiohttp.ClientSession | None = None
) -> AsyncIterator[tuple[AuthMiddleware, aiohttp.ClientSession]]:
    """A fresh middleware and a session using it; on a clean exit, no connection is held."""
    mw = aociauth.new_std_transport(StdTransportParams(config=config, session=token_session))
    async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
        yield mw, session
        assert_no_connection_held(session)


# --- registry operations (plain URLs: the middleware does all the auth) -----------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_manifest(config: bytes, layer: bytes, repo: str) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}],
        # Makes each repository's manifest, and so its digest, its own.
        "annotations": {"org.opencontainers.image.title": repo},
    }
    return json.dumps(manifest).encode()


async def push_blob(
    session: aiohttp.ClientSession, base: str, repo: str, data: bytes, *, chunked: bool = False
) -> str:
    """POST an upload, optionally PATCH the data, then PUT ?digest= (with the data if not sent)."""
    digest = digest_of(data)
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/") as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    rest = data
    if chunked:
        async with session.patch(
            location, data=data, headers={"Content-Type": "application/octet-stream"}
        ) as resp:
            assert resp.status == 202, await resp.text()
            assert resp.headers["Range"] == f"0-{len(data) - 1}"
            location = resp.headers["Location"]
        rest = b""
    separator = "&" if "?" in location else "?"
    async with session.put(
        f"{location}{separator}digest={digest}",
        data=rest,
        headers={"Content-Type": "application/octet-stream"},
    ) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Docker-Content-Digest"] == digest
    return digest


async def mount_blob(
    session: aiohttp.ClientSession, base: str, repo: str, digest: str, source: str
) -> aiohttp.ClientResponse:
    async with session.post(
        f"{base}/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source}
    ) as resp:
        await resp.read()
        return resp


async def push_manifest(
    session: aiohttp.ClientSession, base: str, repo: str, manifest: bytes, tag: str = "v1"
) -> None:
    async with session.put(
        f"{base}/v2/{repo}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}
    ) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Docker-Content-Digest"] == digest_of(manifest)


async def push_image(
    session: aiohttp.ClientSession, base: str, repo: str
) -> tuple[bytes, bytes, bytes]:
    """Push a config (in chunks), a layer (in one PUT) and an OCI manifest tagged v1."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "repo": repo}).encode()
    layer = f"the layer of {repo}".encode() * 64
    await push_blob(session, base, repo, config, chunked=True)
    await push_blob(session, base, repo, layer)
    manifest = oci_manifest(config, layer, repo)
    await push_manifest(session, base, repo, manifest)
    return config, layer, manifest


async def pull_manifest(
    session: aiohttp.ClientSession, base: str, repo: str, tag: str = "v1"
) -> tuple[int, bytes]:
    # distribution 2.8 answers 404 for an OCI manifest unless Accept names the OCI type.
    async with session.get(
        f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
    ) as resp:
        body = await resp.read()
        if resp.status == 200:
            assert resp.headers["Content-Type"] == OCI_MANIFEST
            assert resp.headers["Docker-Content-Digest"] == digest_of(body)
        return resp.status, body


async def pull_blob(session: aiohttp.ClientSession, base: str, repo: str, digest: str) -> bytes:
    async with session.get(f"{base}/v2/{repo}/blobs/{digest}") as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.read()
    assert digest_of(body) == digest
    return body


async def pull_image(
    session: aiohttp.ClientSession, base: str, repo: str, image: tuple[bytes, bytes, bytes]
) -> None:
    """Pull the image back by tag and digest, with GET and HEAD, and list its tags."""
    config, layer, manifest = image
    status, body = await pull_manifest(session, base, repo)
    assert (status, body) == (200, manifest)
    for blob in (config, layer):
        assert await pull_blob(session, base, repo, digest_of(blob)) == blob
    async with session.head(
        f"{base}/v2/{repo}/manifests/{digest_of(manifest)}", headers={"Accept": OCI_MANIFEST}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Docker-Content-Digest"] == digest_of(manifest)
        assert int(resp.headers["Content-Length"]) == len(manifest)
    async with session.head(f"{base}/v2/{repo}/blobs/{digest_of(layer)}") as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(layer)
    async with session.get(f"{base}/v2/{repo}/tags/list") as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": repo, "tags": ["v1"]}


async def catalog(session: aiohttp.ClientSession, base: str) -> list[str]:
    # The catalog pages at 100 by default; 1000 is distribution's largest page.
    async with session.get(f"{base}/v2/_catalog", params={"n": "1000"}) as resp:
        assert resp.status == 200, await resp.text()
        repositories: list[str] = (await resp.json())["repositories"]
    return repositories


async def seed_bulk(
    session: aiohttp.ClientSession, base: str, prefix: str, count: int = BULK
) -> list[str]:
    """Make ``count`` repositories ``prefix-NNN``, each with its own manifest; blobs are mounted."""
    source = f"{prefix}-source"
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = b"a layer shared by mounting"
    for blob in (config, layer):
        await push_blob(session, base, source, blob)
    repos = [f"{prefix}-{i:03d}" for i in range(count)]
    gate = asyncio.Semaphore(20)

    async def seed(repo: str) -> None:
        async with gate:
            for blob in (config, layer):
                resp = await mount_blob(session, base, repo, digest_of(blob), source)
                assert resp.status == 201
            await push_manifest(session, base, repo, oci_manifest(config, layer, repo))

    await asyncio.gather(*(seed(repo) for repo in repos))
    return repos


async def burst_pull(session: aiohttp.ClientSession, base: str, repos: Sequence[str]) -> None:
    """Pull every repository's manifest at once and check each is that repository's own."""
    results = await asyncio.gather(*(pull_manifest(session, base, repo) for repo in repos))
    assert [status for status, _ in results] == [200] * len(repos)
    titles = [
        json.loads(body)["annotations"]["org.opencontainers.image.title"] for _, body in results
    ]
    assert titles == list(repos)


def assert_denied_body(body: object, host: str, *, anonymous: bool = False) -> None:
    """The DENIED body, saying whose credentials the refused token went to (or none)."""
    assert isinstance(body, dict)
    (error,) = body["errors"]
    assert error["code"] == "DENIED"
    refused = f"{DENIED}registry {host} refused a token"
    if anonymous:
        assert error["message"].startswith(f"{refused} asked for anonymously: no credentials")
    else:
        assert error["message"] == (
            f"{refused} issued to the credentials of user 'alice' (from <dict>, key '{host}')"
        )
    assert error["detail"]["anonymous"] is anonymous
    assert ALICE_PASSWORD not in json.dumps(body)


async def denied(resp: aiohttp.ClientResponse, *, anonymous: bool = False) -> None:
    """The original's rule: a 401 right after a fresh token comes back as 403 DENIED."""
    assert resp.status == 403, await resp.text()
    assert resp.headers["Content-Type"] == "application/json"
    assert "WWW-Authenticate" not in resp.headers
    host = resp.url.host_port_subcomponent or ""
    assert_denied_body(await resp.json(), host, anonymous=anonymous)
    assert_denied_body(json.loads(await resp.text()), host, anonymous=anonymous)


def token_scopes(ts: TokenServer) -> list[Scope]:
    """The scope each token request asked for.

    As Scopes, which compare as sets: the middleware passes the challenge's scope
    on as written, and distribution writes the actions in a random order.
    """
    return [parse_scope(" ".join(r.scopes)) for r in ts.requests]


# --- token mode -------------------------------------------------------------------


async def test_token_push_and_pull_an_image_with_one_401_and_one_token(
    tokens: TokenSetup,
) -> None:
    ts, base = tokens.ts, tokens.registry.url
    repo = "team/round-trip"
    async with client(alice_config(tokens.registry)) as (mw, session):
        image = await push_image(session, base, repo)
        await pull_image(session, base, repo, image)
    # The first POST met the challenge; its pull,push token then covered every
    # upload, PATCH, PUT, GET and HEAD of the repository.
    assert mw.stats.responses_401 == 1
    assert mw.stats.rewritten_403 == 0
    assert ts.counters.requests == ts.counters.get_basic == 1
    assert [r.username for r in ts.requests] == [ALICE]
    assert token_scopes(ts) == [parse_scope(f"repository:{repo}:pull,push")]
    assert mw.stats.total_token_requests == 1
    assert mw.stats.requests == 12
    assert mw.stats.retries_after_401 == 1


async def test_token_cross_repository_mount_asks_for_pull_on_the_source(
    tokens: TokenSetup,
) -> None:
    ts, base = tokens.ts, tokens.registry.url
    source, first, second = "team/mount-source", "team/mount-a", "team/mount-b"
    blob = b"a blob to mount elsewhere"
    async with client(alice_config(tokens.registry)) as (_, seeder):
        digest = await push_blob(seeder, base, source, blob)
    ts.reset_counters()
    async with client(alice_config(tokens.registry)) as (mw, session):
        # First contact: the registry challenges for both repositories at once.
        resp = await mount_blob(session, base, first, digest, source)
        assert resp.status == 201
        assert resp.headers["Docker-Content-Digest"] == digest
        # Now the challenge is known: inference asks for both before sending.
        resp = await mount_blob(session, base, second, digest, source)
        assert resp.status == 201
        for repo in (first, second):
            assert await pull_blob(session, base, repo, digest) == blob
    assert mw.stats.responses_401 == 1
    assert mw.stats.fetches_ahead == 1
    assert token_scopes(ts) == [
        parse_scope(f"repository:{source}:pull repository:{first}:pull,push"),
        parse_scope(f"repository:{source}:pull repository:{second}:pull,push"),
    ]


async def test_token_catalog_gets_the_literal_catalog_scope(tokens: TokenSetup) -> None:
    ts, base = tokens.ts, tokens.registry.url
    async with client(alice_config(tokens.registry)) as (_, seeder):
        await push_blob(seeder, base, "team/listed", b"listed")
    ts.reset_counters()
    async with client(alice_config(tokens.registry)) as (mw, session):
        assert "team/listed" in await catalog(session, base)
        assert "team/listed" in await catalog(session, base)
    assert mw.stats.responses_401 == 1
    assert token_scopes(ts) == [new_scope(aociauth.CATALOG_SCOPE)]


async def test_token_anonymous_pull_of_a_public_repository(tokens: TokenSetup) -> None:
    ts, base = tokens.ts, tokens.registry.url
    repo = "public/open-image"
    async with client(alice_config(tokens.registry)) as (_, seeder):
        image = await push_image(seeder, base, repo)
    ts.reset_counters()
    async with client(no_credentials()) as (mw, session):
        config, layer, manifest = image
        assert await pull_manifest(session, base, repo) == (200, manifest)
        for blob in (config, layer):
            assert await pull_blob(session, base, repo, digest_of(blob)) == blob
        # Anonymous may pull public/* only.
        async with session.get(f"{base}/v2/team/round-trip/tags/list") as resp:
            await denied(resp, anonymous=True)
        async with session.get(f"{base}/v2/_catalog") as resp:
            await denied(resp, anonymous=True)
    assert ts.counters.get_basic == 0
    assert ts.counters.get_anonymous == ts.counters.requests
    assert all(r.username is None for r in ts.requests)
    # One token for the public repository (the challenge's), then one fetched ahead for
    # each refused request: the token's own claims show the refusal, so the registry's
    # 401 is final without asking the token server again (1 + 1 + 1).
    assert ts.counters.requests == 3
    assert mw.stats.rewritten_403 == 2
    assert mw.stats.refused_ahead == 2


async def test_token_push_where_only_pull_is_granted_is_denied(tokens: TokenSetup) -> None:
    ts, base = tokens.ts, tokens.registry.url
    repo = "readonly/app"
    manifest = oci_manifest(b"{}", b"layer", repo)
    async with client(alice_config(tokens.registry)) as (mw, session):
        # First contact: 401, a fresh token (pull only granted), 401 again: 403.
        async with session.post(f"{base}/v2/{repo}/blobs/uploads/") as resp:
            await denied(resp)
        assert (mw.stats.responses_401, mw.stats.rewritten_403) == (2, 1)
        # Again: the cache knows the token grants only pull (its claims say so), so a
        # token is fetched ahead, shows the refusal, and the registry's one 401 is final.
        async with session.put(
            f"{base}/v2/{repo}/manifests/v1", data=manifest, headers={"Content-Type": OCI_MANIFEST}
        ) as resp:
            await denied(resp)
        assert (mw.stats.responses_401, mw.stats.rewritten_403) == (3, 2)
        assert mw.stats.refused_ahead == 1
        # Pulling is granted: the registry answers for itself (there is nothing there).
        async with session.get(f"{base}/v2/{repo}/tags/list") as resp:
            assert resp.status == 404
            assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"
    # One fresh token per denied request; the last one, which does grant pull, served the GET.
    assert ts.counters.get_basic == ts.counters.requests == 2
    assert token_scopes(ts) == [parse_scope(f"repository:{repo}:pull,push")] * 2


@pytest.mark.parametrize("how", ["read", "content"])
async def test_token_denied_body_reads_like_any_body(tokens: TokenSetup, how: str) -> None:
    url = f"{tokens.registry.url}/v2/readonly/{how}/blobs/uploads/"
    async with client(alice_config(tokens.registry)) as (_, session), session.post(url) as resp:
        assert resp.status == 403
        body = await resp.read() if how == "read" else await resp.content.read()
    assert_denied_body(json.loads(body), tokens.registry.host)


async def test_token_delete_is_denied_even_to_a_pusher(tokens: TokenSetup) -> None:
    base = tokens.registry.url
    repo = "team/undeletable"
    async with client(alice_config(tokens.registry)) as (mw, session):
        image = await push_image(session, base, repo)
        digest = digest_of(image[2])
        for path in (f"manifests/{digest}", f"blobs/{digest_of(image[1])}"):
            async with session.delete(f"{base}/v2/{repo}/{path}") as resp:
                await denied(resp)
        # Still there.
        assert await pull_manifest(session, base, repo, digest) == (200, image[2])
    assert mw.stats.rewritten_403 == 2
    delete = parse_scope(f"repository:{repo}:delete")
    # The push token, then one per denied DELETE: each refused by its own claims.
    assert [s.contains(delete) for s in token_scopes(tokens.ts)] == [False, True, True]


async def test_token_wrong_password_raises_the_token_servers_refusal(tokens: TokenSetup) -> None:
    base = tokens.registry.url
    async with client(alice_config(tokens.registry, "not-her-password")) as (mw, session):
        with pytest.raises(aociauth.TokenServerError) as caught:
            await pull_manifest(session, base, "team/round-trip")
        assert isinstance(caught.value, aiohttp.ClientError)
        assert caught.value.status == 401
        assert "not-her-password" not in str(caught.value)
    assert mw.stats.responses_401 == 1
    assert tokens.ts.counters.unauthorized == tokens.ts.counters.requests == 1


async def test_token_burst_of_pulls_from_many_repositories_meets_a_single_401(
    tokens: TokenSetup,
) -> None:
    ts, base = tokens.ts, tokens.registry.url
    async with client(alice_config(tokens.registry)) as (_, seeder):
        repos = await seed_bulk(seeder, base, "team/bulk")
    ts.reset_counters()
    async with (
        aiohttp.ClientSession() as token_session,
        client(alice_config(tokens.registry), token_session=token_session) as (mw, session),
    ):
        await burst_pull(session, base, repos)
        # The first request went alone and met the challenge; the other 99 waited
        # for it, then got their tokens before being sent: 49 rode in the first
        # contact's token request, the other 50 shared one (the cap is 50 scopes).
        assert mw.stats.responses_401 == 1
        assert mw.stats.first_contact_waits == BULK - 1
        assert mw.stats.fetches_ahead == BULK - 1
        assert ts.counters.requests == ts.counters.get_basic == 2
        assert mw.stats.total_token_requests == 2
        assert mw.stats.coalesced_scopes == BULK - 2
        # Each repository's scope asked exactly once.
        assert sorted(scope for r in ts.requests for scope in r.scopes) == [
            f"repository:{repo}:pull" for repo in repos
        ]
        # Once more: every token is cached, so no 401 and no token request.
        await burst_pull(session, base, repos)
        assert mw.stats.responses_401 == 1
        assert ts.counters.requests == 2
        assert mw.stats.cache_hits == BULK
        assert_no_connection_held(token_session)


# --- htpasswd (Basic) mode --------------------------------------------------------


async def test_basic_push_and_pull_an_image_with_one_401(
    distribution_htpasswd: DistributionRegistry,
) -> None:
    base = distribution_htpasswd.url
    repo = "real-basic/round-trip"
    async with client(alice_config(distribution_htpasswd)) as (mw, session):
        image = await push_image(session, base, repo)
        await pull_image(session, base, repo, image)
        digest = await push_blob(session, base, "real-basic/mounted", b"to be mounted")
        resp = await mount_blob(
            session, base, "real-basic/mount-target", digest, "real-basic/mounted"
        )
        assert resp.status == 201
        listed = await catalog(session, base)
        assert {repo, "real-basic/mounted", "real-basic/mount-target"} <= set(listed)
    # One 401 taught the middleware the Basic challenge; every later request
    # carried the credentials from the start (a request without them gets 401).
    assert mw.stats.responses_401 == 1
    assert mw.stats.retries_after_401 == 1
    assert mw.stats.total_token_requests == 0
    assert mw.stats.requests == 16


async def test_basic_wrong_password_gets_the_registrys_401_as_is(
    distribution_htpasswd: DistributionRegistry,
) -> None:
    base = distribution_htpasswd.url
    async with client(alice_config(distribution_htpasswd, "not-her-password")) as (mw, session):
        for _ in range(2):
            async with session.get(f"{base}/v2/real-basic/round-trip/tags/list") as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == 'Basic realm="aociauth-test"'
                body = await resp.json()
                assert body["errors"][0]["code"] == "UNAUTHORIZED"
    # The first request went bare, met the challenge and was sent again with the
    # (wrong) credentials; the second carried them from the start. No 403: the
    # credentials came from the config, not from a fresh token.
    assert mw.stats.responses_401 == 3
    assert mw.stats.retries_after_401 == 1
    assert mw.stats.rewritten_403 == 0


async def test_basic_without_credentials_gets_the_401_as_is(
    distribution_htpasswd: DistributionRegistry,
) -> None:
    url = f"{distribution_htpasswd.url}/v2/real-basic/x/tags/list"
    async with client(no_credentials()) as (mw, session), session.get(url) as resp:
        assert resp.status == 401
        assert (await resp.json())["errors"][0]["code"] == "UNAUTHORIZED"
    assert (mw.stats.responses_401, mw.stats.retries_after_401) == (1, 0)


async def test_basic_burst_of_pulls_meets_a_single_401(
    distribution_htpasswd: DistributionRegistry,
) -> None:
    base = distribution_htpasswd.url
    # Basic credentials do not depend on the repository, so ten repositories pulled
    # ten times each make the burst; this registry is shared with other modules.
    async with client(alice_config(distribution_htpasswd)) as (seeding, seeder):
        repos = await seed_bulk(seeder, base, "real-basic/bulk", count=10) * 10
    assert seeding.stats.responses_401 == 1
    async with client(alice_config(distribution_htpasswd)) as (mw, session):
        await burst_pull(session, base, repos)
        await burst_pull(session, base, repos)
    assert mw.stats.responses_401 == 1
    assert mw.stats.first_contact_waits == BULK - 1
    assert mw.stats.requests == 2 * BULK
    assert mw.stats.retries_after_401 == 1
    assert mw.stats.config_lookups == 1
