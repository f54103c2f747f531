"""Push two images, the second reusing the first's layer by a cross-repository mount.

Run it: ``python examples/push_with_mount.py`` (needs ``pip install -e '.[testing]'``).

A mount (``POST /v2/APP/blobs/uploads/?mount=DIGEST&from=BASE``) asks the
registry to link a blob it already holds in BASE into APP, so it is not
uploaded again. The token for it must grant push on APP and pull on BASE:
aociauth infers both from the request's method, path and query and asks the
token server for them before the request goes out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
from yarl import URL

import aociauth
from aociauth.testing import Registry, TokenServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def upload_blob(session: aiohttp.ClientSession, base: str, repo: str, data: bytes) -> str:
    """A two-step upload: POST opens a session, PUT with ?digest= closes it."""
    digest = digest_of(data)
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/") as resp:
        assert resp.status == 202, resp.status
        location = URL(resp.headers["Location"])
    headers = {"Content-Type": "application/octet-stream"}
    async with session.put(
        location.update_query(digest=digest), data=data, headers=headers
    ) as resp:
        assert resp.status == 201, resp.status
    return digest


async def mount_blob(
    session: aiohttp.ClientSession, base: str, repo: str, digest: str, source: str
) -> int:
    """Ask the registry to link ``digest`` from ``source`` into ``repo``; 201 means done."""
    url = URL(f"{base}/v2/{repo}/blobs/uploads/").with_query(mount=digest, **{"from": source})
    async with session.post(url) as resp:
        return resp.status


async def put_manifest(
    session: aiohttp.ClientSession, base: str, repo: str, tag: str, config: bytes, layer: bytes
) -> str:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    headers = {"Content-Type": OCI_MANIFEST}
    async with session.put(
        f"{base}/v2/{repo}/manifests/{tag}", data=manifest, headers=headers
    ) as resp:
        assert resp.status == 201, resp.status
        return resp.headers["Docker-Content-Digest"]


async def main() -> None:
    grants: dict[str | None, dict[str, set[str]]] = {
        "alice": {"repository:team/*": {"pull", "push"}}
    }
    async with (
        TokenServer(users={"alice": "alice-password"}, grants=grants) as token_server,
        Registry(auth="bearer", token_server=token_server) as registry,
    ):
        config = aociauth.ConfigFile.from_dict(
            {"auths": {registry.host: {"username": "alice", "password": "alice-password"}}}
        )
        mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config))
        base = registry.url
        layer = b"a layer both images share\n" * 1000
        async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
            base_config = b'{"architecture":"amd64","os":"linux","base":true}'
            await upload_blob(session, base, "team/base", base_config)
            layer_digest = await upload_blob(session, base, "team/base", layer)
            await put_manifest(session, base, "team/base", "v1", base_config, layer)
            print(f"pushed team/base:v1 with layer {layer_digest[:19]}...")

            uploads_before = registry.counters.requests
            status = await mount_blob(session, base, "team/app", layer_digest, "team/base")
            print(f"mount of the layer into team/app from team/base: {status}")
            assert status == 201, "the registry should have mounted the blob"
            assert registry.counters.requests == uploads_before + 1

            app_config = b'{"architecture":"amd64","os":"linux","app":true}'
            await upload_blob(session, base, "team/app", app_config)
            digest = await put_manifest(session, base, "team/app", "v1", app_config, layer)
            print(f"pushed team/app:v1 as {digest[:19]}... without uploading the layer again")

        print(f"401 responses: {mw.stats.responses_401}")
        print(f"token requests: {mw.stats.total_token_requests}")
        for request in token_server.requests:
            print(f"  token asked for: {' '.join(request.scopes)}")
        print(f"team/app holds the layer: {registry.has_blob('team/app', layer_digest)}")


if __name__ == "__main__":
    asyncio.run(main())
