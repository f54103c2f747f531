"""Pull many images concurrently through aociauth, against an in-process registry.

Run it: ``python examples/pull_many.py`` (needs ``pip install -e '.[testing]'``).

It starts a token server and a registry that wants bearer tokens on
127.0.0.1, stores 50 small images in 50 repositories, and pulls each one's
manifest and config blob, 16 at a time, through one AuthMiddleware. The
middleware meets the registry's challenge once; after that it fetches
tokens before the requests that need them, so no other request is answered
401, and the repositories that miss a token at the same time share one token
request (``coalesce_token_requests``): each repository's scope is asked for
once, most of them in another's request. The counters at the end say so.
"""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp

import aociauth
from aociauth.testing import Registry, TokenServer

IMAGES = 50
CONCURRENCY = 16
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


async def pull(session: aiohttp.ClientSession, base: str, repository: str) -> str:
    """Fetch one image's manifest and config blob; return the config's digest."""
    async with session.get(
        f"{base}/v2/{repository}/manifests/latest", headers={"Accept": ACCEPT}
    ) as resp:
        resp.raise_for_status()
        manifest = await resp.json(content_type=None)
    digest: str = manifest["config"]["digest"]
    async with session.get(f"{base}/v2/{repository}/blobs/{digest}") as resp:
        resp.raise_for_status()
        config = await resp.read()
    assert "sha256:" + hashlib.sha256(config).hexdigest() == digest
    return digest


async def main() -> None:
    async with (
        TokenServer(users={"alice": "alice-password"}) as token_server,
        Registry(auth="bearer", token_server=token_server) as registry,
    ):
        repositories = [f"team/app{i}" for i in range(IMAGES)]
        for repository in repositories:
            registry.seed_image(repository)
        print(f"registry at {registry.url}, tokens from {token_server.realm}")

        # What `docker login 127.0.0.1:PORT` would write to config.json.
        config = aociauth.ConfigFile.from_dict(
            {"auths": {registry.host: {"username": "alice", "password": "alice-password"}}}
        )
        mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config))
        limit = asyncio.Semaphore(CONCURRENCY)

        async def pull_one(session: aiohttp.ClientSession, repository: str) -> str:
            async with limit:
                return await pull(session, registry.url, repository)

        async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
            digests = await asyncio.gather(*(pull_one(session, r) for r in repositories))

        stats = mw.stats
        print(f"pulled {len(digests)} images, {CONCURRENCY} at a time")
        print(f"requests sent: {stats.requests}")
        print(f"401 responses: {stats.responses_401}")
        print(f"token requests: {stats.total_token_requests}")
        print(f"scopes asked in another repository's token request: {stats.coalesced_scopes}")
        print(f"cache hits: {stats.cache_hits}")
        print(f"token server saw: {token_server.counters.requests} requests")


if __name__ == "__main__":
    asyncio.run(main())
