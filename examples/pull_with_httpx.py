"""Pull images with httpx through aociauth, against an in-process registry.

Run it: ``python examples/pull_with_httpx.py`` (needs ``pip install -e '.[testing,httpx]'``).

It starts a token server and a registry that wants bearer tokens on
127.0.0.1, stores 20 small images, and pulls each one's manifest and config
blob with ``httpx.AsyncClient(auth=RegistryAuth(...))``. The flow is the one
the aiohttp middleware runs (the same core decides), so the counts are the
same: one 401 for the registry's first challenge, and one token request for
all 20 repositories, since the 19 requests held back behind the first add
their scopes to its token request (``coalesce_token_requests``).
"""

from __future__ import annotations

import asyncio
import hashlib

import httpx

import aociauth
from aociauth.httpx import RegistryAuth
from aociauth.testing import Registry, TokenServer

IMAGES = 20
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


async def pull(client: httpx.AsyncClient, base: str, repository: str) -> str:
    """Fetch one image's manifest and config blob; return the config's digest."""
    resp = await client.get(f"{base}/v2/{repository}/manifests/latest", headers={"Accept": ACCEPT})
    resp.raise_for_status()
    digest: str = resp.json()["config"]["digest"]
    resp = await client.get(f"{base}/v2/{repository}/blobs/{digest}")
    resp.raise_for_status()
    assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == digest
    return digest


async def main() -> None:
    async with (
        TokenServer(users={"alice": "alice-password"}) as token_server,
        Registry(auth="bearer", token_server=token_server) as registry,
    ):
        repositories = [f"team/app{i}" for i in range(IMAGES)]
        for repository in repositories:
            registry.seed_image(repository)

        # What `docker login 127.0.0.1:PORT` would write to config.json.
        config = aociauth.ConfigFile.from_dict(
            {"auths": {registry.host: {"username": "alice", "password": "alice-password"}}}
        )
        async with (
            RegistryAuth(aociauth.StdTransportParams(config=config)) as auth,
            httpx.AsyncClient(auth=auth) as client,
        ):
            digests = await asyncio.gather(*(pull(client, registry.url, r) for r in repositories))

        stats = auth.stats
        print(f"pulled {len(digests)} images with httpx")
        print(f"requests sent: {stats.requests}")
        print(f"401 responses: {stats.responses_401}")
        print(f"token requests: {stats.total_token_requests}")
        print(f"token server saw: {token_server.counters.requests} requests")


if __name__ == "__main__":
    asyncio.run(main())
