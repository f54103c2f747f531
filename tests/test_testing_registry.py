"""The in-process Registry acts like distribution 2.8; RecordingServer records requests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from aociauth.testing.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    RecordingServer,
    Registry,
)
from aociauth.testing.tokenserver import TokenServer

ALICE = {"alice": "secret-password"}
UNAUTHORIZED_V2 = (
    b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}\n'
)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def challenge_params(header: str) -> dict[str, str]:
    """Rough parse of a challenge's quoted parameters, as a test needs it."""
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


@pytest.fixture
async def ts() -> AsyncIterator[TokenServer]:
    async with TokenServer(users=ALICE) as server:
        yield server


@pytest.fixture
async def reg(ts: TokenServer) -> AsyncIterator[Registry]:
    async with Registry(auth="bearer", token_server=ts) as registry:
        yield registry


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def token_for(ts: TokenServer, *access: tuple[str, str, list[str]], **kw: Any) -> str:
    claim = [{"type": t, "name": n, "actions": a} for t, n, a in access]
    return ts.issuer.issue(subject="alice", access=claim, expires_in=300, **kw)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_dance_by_hand(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    image = reg.seed_image("team/app", "v1")
    url = f"{reg.url}/v2/team/app/manifests/v1"
    accept = {"Accept": OCI_MANIFEST}
    async with session.get(url, headers=accept) as resp:
        assert resp.status == 401
        challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    params = challenge_params(challenge)
    assert params == {
        "realm": ts.realm,
        "service": ts.service,
        "scope": "repository:team/app:pull",
    }
    query = {"service": params["service"], "scope": params["scope"]}
    auth = {"Authorization": aiohttp.encode_basic_auth("alice", "secret-password")}
    async with session.get(params["realm"], params=query, headers=auth) as resp:
        assert resp.status == 200
        token = (await resp.json())["token"]
    async with session.get(url, headers={**accept, **bearer(token)}) as resp:
        assert resp.status == 200
        assert await resp.read() == image.manifest
        assert resp.headers["Docker-Content-Digest"] == image.manifest_digest
    assert reg.counters.unauthorized == 1
    assert reg.counters.by_status == {401: 1, 200: 1}
    assert reg.counters.anonymous == 1
    assert reg.counters.bearer == 1
    assert ts.counters.get_basic == 1
    last = reg.requests[-1]
    assert (last.auth_scheme, last.subject, last.scope) == (
        "Bearer",
        "alice",
        "repository:team/app:pull",
    )
    assert reg.requests[0].auth_scheme is None


async def test_base_challenge_has_no_scope_and_any_valid_token_opens_it(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{reg.url}/v2/") as resp:
        assert resp.status == 401
        assert resp.headers["Www-Authenticate"] == (
            f'Bearer realm="{ts.realm}",service="{ts.service}"'
        )
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        assert await resp.read() == UNAUTHORIZED_V2
    async with session.get(f"{reg.url}/v2/", headers=bearer(token_for(ts))) as resp:
        assert resp.status == 200
        assert await resp.read() == b"{}"
    lower = {"Authorization": f"bearer {token_for(ts)}"}
    async with session.get(f"{reg.url}/v2/", headers=lower) as resp:
        assert resp.status == 200


async def test_bad_token_and_missing_access_are_told_apart_only_by_error(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    url = f"{reg.url}/v2/team/app/tags/list"
    other_issuer = TokenServer().issuer
    forged = other_issuer.issue(subject="alice", access=[], expires_in=300)
    push_only = token_for(ts, ("repository", "team/app", ["push"]))
    bodies = []
    headers = []
    for token in (forged, push_only):
        async with session.get(url, headers=bearer(token)) as resp:
            assert resp.status == 401
            headers.append(resp.headers["WWW-Authenticate"])
            bodies.append(await resp.json())
    base = f'Bearer realm="{ts.realm}",service="{ts.service}",scope="repository:team/app:pull"'
    assert headers == [f'{base},error="invalid_token"', f'{base},error="insufficient_scope"']
    assert bodies[0] == bodies[1]
    assert bodies[0]["errors"][0]["detail"] == [
        {"Type": "repository", "Class": "", "Name": "team/app", "Action": "pull"}
    ]
    assert reg.counters.invalid_token == 1
    assert reg.counters.insufficient_scope == 1
    assert reg.counters.unauthorized == 2


async def test_basic_credentials_and_malformed_bearer_get_the_plain_challenge(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    url = f"{reg.url}/v2/team/app/tags/list"
    attempts = [
        {"Authorization": aiohttp.encode_basic_auth("alice", "secret-password")},
        {"Authorization": f"Bearer  {token_for(ts, ('repository', 'team/app', ['pull']))}"},
    ]
    for headers in attempts:
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 401
            assert "error=" not in resp.headers["WWW-Authenticate"]
    assert reg.counters.basic == 1
    assert reg.counters.bearer == 1


async def test_expired_token_gets_leeway_like_distribution(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    url = f"{reg.url}/v2/"
    past = time.time() - 330
    expired_30s_ago = token_for(ts, now=past)
    async with session.get(url, headers=bearer(expired_30s_ago)) as resp:
        assert resp.status == 200
    reg.leeway = 0
    async with session.get(url, headers=bearer(expired_30s_ago)) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].endswith(',error="invalid_token"')


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("HEAD", "/v2/a/b/manifests/v1", "repository:a/b:pull"),
        ("GET", "/v2/a/b/blobs/sha256:" + "0" * 64, "repository:a/b:pull"),
        ("PUT", "/v2/a/b/manifests/v1", "repository:a/b:pull,push"),
        ("POST", "/v2/a/b/blobs/uploads/", "repository:a/b:pull,push"),
        ("PATCH", "/v2/a/b/blobs/uploads/x", "repository:a/b:pull,push"),
        ("DELETE", "/v2/a/b/manifests/v1", "repository:a/b:delete"),
        ("GET", "/v2/_catalog", "registry:catalog:*"),
        ("GET", "/v2/org/team/app/tags/list", "repository:org/team/app:pull"),
        (
            "POST",
            "/v2/team/beta/blobs/uploads/?mount=sha256:" + "1" * 64 + "&from=library/alpha",
            "repository:team/beta:pull,push repository:library/alpha:pull",
        ),
    ],
)
async def test_challenge_scope_follows_method_and_route(
    reg: Registry, session: aiohttp.ClientSession, method: str, path: str, scope: str
) -> None:
    async with session.request(method, reg.url + path) as resp:
        assert resp.status == 401
        assert challenge_params(resp.headers["WWW-Authenticate"])["scope"] == scope


async def test_shuffled_challenges_use_both_orders_reproducibly(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    mount = "?mount=sha256:" + "1" * 64 + "&from=library/alpha"
    seen: list[list[str]] = []
    for _ in range(2):
        async with Registry(
            auth="bearer", token_server=ts, shuffle_challenges=True, seed=3
        ) as registry:
            scopes = []
            for query in ("", mount) * 16:
                url = f"{registry.url}/v2/team/beta/blobs/uploads/{query}"
                async with session.post(url) as resp:
                    scopes.append(challenge_params(resp.headers["WWW-Authenticate"])["scope"])
            seen.append(scopes)
    assert seen[0] == seen[1]
    plain, mounts = seen[0][0::2], seen[0][1::2]
    assert set(plain) == {"repository:team/beta:pull,push", "repository:team/beta:push,pull"}
    assert {m.split(" ")[0].split(":")[1] for m in mounts} == {"team/beta", "library/alpha"}


async def test_delete_is_unsupported_by_default_after_authorization(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    reg.seed_image("a", "v1")
    token = token_for(ts, ("repository", "a", ["delete"]))
    async with session.delete(f"{reg.url}/v2/a/manifests/v1", headers=bearer(token)) as resp:
        assert resp.status == 405
        assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"
    reg.delete_enabled = True
    async with session.delete(f"{reg.url}/v2/a/manifests/v1", headers=bearer(token)) as resp:
        assert resp.status == 202
    assert reg.tags("a") == []


async def test_catalog_needs_the_literal_star_and_paginates(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    for i in range(5):
        reg.seed_image(f"bulk/r{i:03}", "v1")
    url = f"{reg.url}/v2/_catalog"
    pull = token_for(ts, ("registry", "catalog", ["pull"]))
    async with session.get(url, headers=bearer(pull)) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].endswith(
            'scope="registry:catalog:*",error="insufficient_scope"'
        )
    star = bearer(token_for(ts, ("registry", "catalog", ["*"])))
    pages = []
    next_url: str | None = url + "?n=2"
    while next_url is not None:
        async with session.get(next_url, headers=star) as resp:
            assert resp.status == 200
            pages.append((await resp.json())["repositories"])
            link = resp.headers.get("Link")
        next_url = None if link is None else reg.url + link[1 : link.index(">")]
    assert pages == [["bulk/r000", "bulk/r001"], ["bulk/r002", "bulk/r003"], ["bulk/r004"]]
    async with session.get(url + "?n=2", headers=star) as resp:
        assert resp.headers["Link"] == '</v2/_catalog?last=bulk%2Fr001&n=2>; rel="next"'
    async with session.get(url + "?n=2000", headers=star) as resp:
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
    async with session.get(url, headers=star) as resp:
        assert len((await resp.json())["repositories"]) == 5
        assert "Link" not in resp.headers


async def test_catalog_pages_at_one_hundred_by_default(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    for i in range(101):
        reg.seed_blob(f"bulk/r{i:03}", b"x")
    star = bearer(token_for(ts, ("registry", "catalog", ["*"])))
    async with session.get(f"{reg.url}/v2/_catalog", headers=star) as resp:
        assert len((await resp.json())["repositories"]) == 100
        assert resp.headers["Link"] == '</v2/_catalog?last=bulk%2Fr099&n=100>; rel="next"'


async def test_mount_needs_pull_on_the_source_then_links_the_blob(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    digest = reg.seed_blob("library/alpha", b"shared layer")
    url = f"{reg.url}/v2/team/beta/blobs/uploads/?mount={digest}&from=library/alpha"
    target_only = token_for(ts, ("repository", "team/beta", ["pull", "push"]))
    async with session.post(url, headers=bearer(target_only)) as resp:
        assert resp.status == 401
        assert challenge_params(resp.headers["WWW-Authenticate"])["scope"] == (
            "repository:team/beta:pull,push repository:library/alpha:pull"
        )
    assert not reg.has_blob("team/beta", digest)
    both = token_for(
        ts,
        ("repository", "team/beta", ["pull", "push"]),
        ("repository", "library/alpha", ["pull"]),
    )
    async with session.post(url, headers=bearer(both)) as resp:
        assert resp.status == 201
        assert resp.headers["Docker-Content-Digest"] == digest
        assert resp.headers["Location"] == f"{reg.url}/v2/team/beta/blobs/{digest}"
    assert reg.has_blob("team/beta", digest)
    missing = url.replace(digest, "sha256:" + "9" * 64)
    async with session.post(missing, headers=bearer(both)) as resp:
        assert resp.status == 202
        assert "/v2/team/beta/blobs/uploads/" in resp.headers["Location"]


async def test_chunked_upload_flow_with_locations_from_the_host_header(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    token = bearer(token_for(ts, ("repository", "team/app", ["pull", "push"])))
    data = b"0123456789" * 10
    async with session.post(
        f"{reg.url}/v2/team/app/blobs/uploads/",
        headers={**token, "Host": "proxy.example:8443"},
    ) as resp:
        assert resp.status == 202
        assert resp.headers["Range"] == "0-0"
        location = resp.headers["Location"]
    assert location.startswith("http://proxy.example:8443/v2/team/app/blobs/uploads/")
    path = location.removeprefix("http://proxy.example:8443")
    async with session.patch(reg.url + path, data=data[:40], headers=token) as resp:
        assert resp.status == 202
        assert resp.headers["Range"] == "0-39"
        path = resp.headers["Location"].removeprefix(reg.url)
    async with session.get(reg.url + path, headers=token) as resp:
        assert resp.status == 204
        assert resp.headers["Range"] == "0-39"
    async with session.put(
        f"{reg.url}{path}&digest={digest_of(data)}", data=data[40:], headers=token
    ) as resp:
        assert resp.status == 201
        assert resp.headers["Location"] == f"{reg.url}/v2/team/app/blobs/{digest_of(data)}"
    assert reg.blobs[digest_of(data)] == data
    async with session.get(f"{reg.url}/v2/team/app/blobs/{digest_of(data)}", headers=token) as r:
        assert await r.read() == data
        assert r.headers["Docker-Content-Digest"] == digest_of(data)


async def test_upload_with_a_wrong_digest_is_refused_and_cancelled(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    token = bearer(token_for(ts, ("repository", "a", ["pull", "push"])))
    async with session.post(f"{reg.url}/v2/a/blobs/uploads/", headers=token) as resp:
        path = resp.headers["Location"].removeprefix(reg.url)
    wrong = "sha256:" + "0" * 64
    async with session.put(f"{reg.url}{path}&digest={wrong}", data=b"zz", headers=token) as r:
        assert r.status == 400
        assert (await r.json())["errors"][0]["code"] == "DIGEST_INVALID"
    async with session.get(reg.url + path, headers=token) as resp:
        assert resp.status == 404
    assert reg.blobs == {}


async def test_monolithic_post_stores_the_body_unless_switched_off(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    token = bearer(token_for(ts, ("repository", "a", ["pull", "push"])))
    data = b"monolithic"
    url = f"{reg.url}/v2/a/blobs/uploads/?digest={digest_of(data)}"
    async with session.post(url, data=data, headers=token) as resp:
        assert resp.status == 201
    assert reg.has_blob("a", digest_of(data))
    reg.monolithic_post = False
    other = b"ignored, as distribution 2.8 does"
    url = f"{reg.url}/v2/b/blobs/uploads/?digest={digest_of(other)}"
    token_b = bearer(token_for(ts, ("repository", "b", ["pull", "push"])))
    async with session.post(url, data=other, headers=token_b) as resp:
        assert resp.status == 202
    assert not reg.has_blob("b", digest_of(other))


async def test_oci_manifest_needs_its_media_type_in_accept(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    image = reg.seed_image("a", "v1")
    token = bearer(token_for(ts, ("repository", "a", ["pull"])))
    for ref in ("v1", image.manifest_digest):
        url = f"{reg.url}/v2/a/manifests/{ref}"
        for accept in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
            async with session.get(url, headers={**token, **accept}) as resp:
                assert resp.status == 404
                error = (await resp.json())["errors"][0]
                assert error == {
                    "code": "MANIFEST_UNKNOWN",
                    "message": "OCI manifest found, but accept header does not support OCI"
                    " manifests",
                }
        accept = {
            "Accept": f"application/vnd.docker.distribution.manifest.v2+json, {OCI_MANIFEST};q=0.5"
        }
        async with session.get(url, headers={**token, **accept}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == OCI_MANIFEST
            assert resp.headers["Etag"] == f'"{image.manifest_digest}"'
        async with session.head(url, headers={**token, "Accept": OCI_MANIFEST}) as resp:
            assert resp.status == 200
            assert resp.content_length == len(image.manifest)
            assert await resp.read() == b""


async def test_oci_index_needs_its_media_type_in_accept(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    image = reg.seed_image("a", "v1")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": image.manifest_digest,
                    "size": len(image.manifest),
                }
            ],
        }
    ).encode()
    token = bearer(token_for(ts, ("repository", "a", ["pull", "push"])))
    async with session.put(
        f"{reg.url}/v2/a/manifests/multi", data=index, headers={**token, "Content-Type": OCI_INDEX}
    ) as resp:
        assert resp.status == 201
    async with session.get(f"{reg.url}/v2/a/manifests/multi", headers=token) as resp:
        assert resp.status == 404
        assert "OCI index found" in (await resp.json())["errors"][0]["message"]
    async with session.get(
        f"{reg.url}/v2/a/manifests/multi", headers={**token, "Accept": OCI_INDEX}
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == index


async def test_manifest_put_checks_blobs_and_digest(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    source = reg.seed_image("a", "v1")
    token = bearer(token_for(ts, ("repository", "b", ["pull", "push"])))
    put = {**token, "Content-Type": OCI_MANIFEST}
    async with session.put(f"{reg.url}/v2/b/manifests/v1", data=source.manifest, headers=put) as r:
        assert r.status == 400
        codes = [e["code"] for e in (await r.json())["errors"]]
        assert codes == ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]
    reg.seed_blob("b", reg.blobs[source.config_digest])
    reg.seed_blob("b", reg.blobs[source.layer_digests[0]])
    wrong = f"{reg.url}/v2/b/manifests/sha256:{'2' * 64}"
    async with session.put(wrong, data=source.manifest, headers=put) as resp:
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"
    async with session.put(f"{reg.url}/v2/b/manifests/bad", data=b"nope", headers=put) as resp:
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["code"] == "MANIFEST_INVALID"
    for ref in (source.manifest_digest, "v2", "v1"):
        async with session.put(
            f"{reg.url}/v2/b/manifests/{ref}", data=source.manifest, headers=put
        ) as resp:
            assert resp.status == 201
            assert resp.headers["Docker-Content-Digest"] == source.manifest_digest
            assert resp.headers["Location"] == (
                f"{reg.url}/v2/b/manifests/{source.manifest_digest}"
            )
    async with session.get(f"{reg.url}/v2/b/tags/list", headers=token) as resp:
        assert await resp.json() == {"name": "b", "tags": ["v1", "v2"]}


async def test_unknown_names_and_routes(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    token = bearer(token_for(ts, ("repository", "zz", ["pull"])))
    async with session.get(f"{reg.url}/v2/zz/tags/list", headers=token) as resp:
        assert resp.status == 404
        assert (await resp.json())["errors"][0] == {
            "code": "NAME_UNKNOWN",
            "message": "repository name not known to registry",
            "detail": {"name": "zz"},
        }
    async with session.get(
        f"{reg.url}/v2/zz/manifests/v1", headers={**token, "Accept": OCI_MANIFEST}
    ) as resp:
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["detail"] == {"Tag": "v1"}
    async with session.get(f"{reg.url}/v2/zz/blobs/sha256:{'1' * 64}", headers=token) as resp:
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
    for path in ("/v2/Upper/tags/list", "/v2/a/nope", "/other"):
        async with session.get(reg.url + path) as resp:
            assert resp.status == 404
            assert await resp.text() == "404 page not found\n"
    async with session.patch(f"{reg.url}/v2/zz/manifests/v1") as resp:
        assert resp.status == 401
    reg.auth = "none"
    async with session.patch(f"{reg.url}/v2/zz/manifests/v1") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "DELETE, GET, HEAD, PUT"


async def test_blob_redirect_reaches_the_recording_server_without_credentials(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    image = reg.seed_image("a", "v1", layer=b"layer bytes" * 100)
    token = bearer(token_for(ts, ("repository", "a", ["pull"])))
    async with RecordingServer(blobs=reg.blobs) as cdn:
        reg.blob_redirect = cdn.url
        blob_url = f"{reg.url}/v2/a/blobs/{image.layer_digests[0]}"
        async with session.get(blob_url, headers=token, allow_redirects=False) as resp:
            assert resp.status == 307
            location = resp.headers["Location"]
        assert location.startswith(f"{cdn.url}/{image.layer_digests[0]}?X-Amz-Algorithm=")
        assert "X-Amz-Signature=" in location
        async with session.get(blob_url, headers=token) as resp:
            assert resp.status == 200
            assert await resp.read() == b"layer bytes" * 100
        assert reg.counters.blob_redirects == 2
        assert len(cdn.requests) == 1
        assert cdn.requests[0].path == f"/{image.layer_digests[0]}"
        assert "X-Amz-Signature" in cdn.requests[0].query
        assert cdn.requests[0].authorization is None
        assert cdn.credentials_seen() == []


async def test_recording_server_notices_every_kind_of_credential(
    session: aiohttp.ClientSession,
) -> None:
    async with RecordingServer() as attacker:
        attacker.set_response("/token", status=200, body='{"token":"x"}')
        async with session.get(f"{attacker.url}/plain") as resp:
            assert resp.status == 404
        async with session.get(f"{attacker.url}/h", headers={"Authorization": "Bearer t"}):
            pass
        async with session.get(f"{attacker.url}/c", headers={"Cookie": "s=1"}):
            pass
        async with session.get(f"{attacker.url}/token", params={"refresh_token": "r"}) as resp:
            assert await resp.read() == b'{"token":"x"}'
        async with session.post(f"{attacker.url}/token", data={"password": "p", "x": "y"}):
            pass
        async with session.post(f"{attacker.url}/token", data={"grant_type": "x"}):
            pass
        seen = [r.path for r in attacker.credentials_seen()]
        assert seen == ["/h", "/c", "/token", "/token"]
        assert "Bearer t" not in repr(attacker.requests)
        assert attacker.requests[4].body == b"password=p&x=y"


async def test_basic_mode_challenges_like_htpasswd(session: aiohttp.ClientSession) -> None:
    async with Registry(auth="basic", users=ALICE) as reg:
        reg.seed_image("a", "v1")
        url = f"{reg.url}/v2/a/tags/list"
        wrong = {"Authorization": aiohttp.encode_basic_auth("alice", "wrong")}
        right = {"Authorization": aiohttp.encode_basic_auth("alice", "secret-password")}
        for headers in ({}, wrong, {"Authorization": "Bearer x"}):
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == 'Basic realm="basic-realm"'
                assert (await resp.json())["errors"][0]["detail"][0]["Name"] == "a"
        async with session.get(f"{reg.url}/v2/") as resp:
            assert await resp.read() == UNAUTHORIZED_V2
        async with session.get(url, headers=right) as resp:
            assert resp.status == 200
        assert reg.requests[-1].subject == "alice"
        assert reg.requests[-1].auth_scheme == "Basic"
        assert reg.counters.unauthorized == 4


async def test_open_registry_needs_nothing(session: aiohttp.ClientSession) -> None:
    async with Registry() as reg:
        reg.seed_image("a", "v1")
        async with session.get(f"{reg.url}/v2/a/tags/list") as resp:
            assert await resp.json() == {"name": "a", "tags": ["v1"]}
        async with session.get(f"{reg.url}/v2") as resp:
            assert resp.status == 200
            assert resp.history[0].status == 301


async def test_bearer_mode_needs_a_token_server() -> None:
    with pytest.raises(ValueError, match="token_server"):
        Registry(auth="bearer")


async def test_realm_and_service_can_be_overridden(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    realm = f"http://localhost:{ts.port}/token"
    registry = Registry(auth="bearer", token_server=ts, realm=realm, service="svc")
    async with registry as reg, session.get(f"{reg.url}/v2/") as resp:
        assert resp.headers["WWW-Authenticate"] == f'Bearer realm="{realm}",service="svc"'


async def test_failures_come_before_auth_and_can_target_paths(
    reg: Registry, session: aiohttp.ClientSession
) -> None:
    reg.fail_next(1, 500, path_contains="/blobs/")
    reg.rate_limit_next(1, retry_after=2)
    async with session.get(f"{reg.url}/v2/") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
    async with session.get(f"{reg.url}/v2/") as resp:
        assert resp.status == 401
    async with session.get(f"{reg.url}/v2/a/blobs/sha256:{'1' * 64}") as resp:
        assert resp.status == 500
    async with session.get(f"{reg.url}/v2/a/blobs/sha256:{'1' * 64}") as resp:
        assert resp.status == 401
    assert reg.counters.failures_injected == 2
    assert reg.counters.unauthorized == 2
    assert reg.counters.by_status == {429: 1, 500: 1, 401: 2}


async def test_failure_rate_is_seeded(session: aiohttp.ClientSession) -> None:
    runs = []
    for _ in range(2):
        async with Registry(failure_rate=0.3, seed=11) as reg:
            statuses = []
            for _ in range(30):
                async with session.get(f"{reg.url}/v2/") as resp:
                    statuses.append(resp.status)
            runs.append(statuses)
            assert reg.counters.failures_injected == statuses.count(503)
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


async def test_referrers_lists_manifests_with_that_subject(
    reg: Registry, session: aiohttp.ClientSession
) -> None:
    reg.auth = "none"
    image = reg.seed_image("a", "v1")
    signature = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "x", "size": 2},
            "layers": [],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
            },
        }
    ).encode()
    sig_digest = reg.seed_manifest("a", digest_of(signature), signature)
    url = f"{reg.url}/v2/a/referrers/{image.manifest_digest}"
    async with session.get(url) as resp:
        assert resp.content_type == OCI_INDEX
        index = await resp.json(content_type=None)
    assert index["manifests"] == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": sig_digest,
            "size": len(signature),
            "artifactType": "application/vnd.example.sig",
        }
    ]
    async with session.get(url, params={"artifactType": "other"}) as resp:
        assert (await resp.json(content_type=None))["manifests"] == []
        assert resp.headers["OCI-Filters-Applied"] == "artifactType"
    reg.referrers = False
    async with session.get(url) as resp:
        assert resp.status == 404


async def test_pause_lines_up_concurrent_requests(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    reg.pause()

    async def fetch() -> int:
        async with session.get(f"{reg.url}/v2/") as resp:
            return resp.status

    pending = [asyncio.ensure_future(fetch()) for _ in range(4)]
    await reg.wait_for_requests(4)
    assert reg.counters.in_flight == 4
    assert reg.counters.by_status == {}
    reg.resume()
    assert await asyncio.gather(*pending) == [401] * 4
    assert reg.counters.max_in_flight == 4


async def test_counters_reset_and_recording_can_be_off(
    reg: Registry, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{reg.url}/v2/"):
        pass
    reg.reset_counters()
    assert reg.counters.requests == 0
    assert reg.requests == []
    reg.record_requests = False
    async with session.get(f"{reg.url}/v2/"):
        pass
    assert reg.counters.requests == 1
    assert reg.requests == []


async def test_many_requests_with_one_token(
    ts: TokenServer, reg: Registry, session: aiohttp.ClientSession
) -> None:
    image = reg.seed_image("load/app", "v1")
    headers = {
        **bearer(token_for(ts, ("repository", "load/app", ["pull"]))),
        "Accept": OCI_MANIFEST,
    }
    url = f"{reg.url}/v2/load/app/manifests/{image.manifest_digest}"

    async def fetch() -> int:
        async with session.head(url, headers=headers) as resp:
            return resp.status

    for _ in range(10):
        statuses = await asyncio.gather(*(fetch() for _ in range(100)))
        assert statuses == [200] * 100
    assert reg.counters.by_status == {200: 1000}
    assert len(reg.requests) == 1000


async def test_stopping_leaves_no_task_and_frees_the_ports() -> None:
    before = asyncio.all_tasks()
    ts = TokenServer()
    async with (
        ts,
        Registry(auth="bearer", token_server=ts) as reg,
        RecordingServer() as rec,
        aiohttp.ClientSession() as client,
    ):
        ports = [ts.port, reg.port, rec.port]
        for url in (ts.realm, f"{reg.url}/v2/", rec.url):
            async with client.get(url):
                pass
    assert asyncio.all_tasks() == before
    for port in ports:
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=5),
        ):
            pass
