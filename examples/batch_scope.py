"""One token for a batch of repositories, with ``aociauth.with_scope``.

Run it: ``python examples/batch_scope.py`` (needs ``pip install -e '.[testing]'``).

Requests that miss a token at the same time already share a token request
(``coalesce_token_requests``, up to 50 scope items). Requests made one after
another do not: each asks for just the scope it needs, a token request per
repository. When a program knows it is about to touch a set of repositories,
``with_scope(scope)`` says so: every token fetched inside the block asks for
that whole scope too, so the first token covers the batch and every later
request is served from the cache. The scope also follows the tasks
``asyncio.gather`` makes inside the block.
"""

from __future__ import annotations

import asyncio

import aiohttp

import aociauth
from aociauth.testing import Registry, TokenServer

REPOSITORIES = [f"team/service{i}" for i in range(10)]


async def list_tags(session: aiohttp.ClientSession, base: str, repository: str) -> list[str]:
    async with session.get(f"{base}/v2/{repository}/tags/list") as resp:
        resp.raise_for_status()
        tags: list[str] = (await resp.json())["tags"]
        return tags


async def list_all(registry: Registry, config: aociauth.ConfigFile) -> aociauth.AuthStats:
    """List the tags of every repository, one after another, with a fresh middleware."""
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config))
    async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
        for repository in REPOSITORIES:
            await list_tags(session, registry.url, repository)
    return mw.stats


async def main() -> None:
    async with (
        TokenServer(users={"alice": "alice-password"}) as token_server,
        Registry(auth="bearer", token_server=token_server) as registry,
    ):
        for repository in REPOSITORIES:
            registry.seed_image(repository, "v1")
        config = aociauth.ConfigFile.from_dict(
            {"auths": {registry.host: {"username": "alice", "password": "alice-password"}}}
        )

        stats = await list_all(registry, config)
        print(f"without with_scope: {stats.total_token_requests} token requests")

        batch = aociauth.new_scope(
            *(
                aociauth.ResourceScope(aociauth.TYPE_REPOSITORY, r, aociauth.ACTION_PULL)
                for r in REPOSITORIES
            )
        )
        token_server.reset_counters()
        with aociauth.with_scope(batch):
            stats = await list_all(registry, config)
        print(
            f"with_scope of {len(REPOSITORIES)} repositories: "
            f"{stats.total_token_requests} token request(s) for {stats.requests} requests"
        )
        asked = token_server.requests[0].scopes
        print(f"the one token was asked for {len(asked)} scope item(s)")


if __name__ == "__main__":
    asyncio.run(main())
