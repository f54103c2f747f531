"""The adapter harness gives the same answers through aiohttp and httpx, on asyncio or trio."""

from __future__ import annotations

import anyio
import anyio.from_thread
import pytest

import aociauth
from aociauth.testing import Registry, TokenServer
from aociauth.testing.adapters import ADAPTERS, Answer, Harness
from aociauth.testing.registry import OCI_MANIFEST

ACCEPT = {"Accept": OCI_MANIFEST}


async def pull(harness: Harness) -> tuple[Answer, Answer, int, bool]:
    """Pull one manifest twice through the harness; what came back and what it cost."""
    try:
        ts = await harness.serve(TokenServer(users={"alice": "pw"}))
        reg = await harness.serve(Registry(auth="bearer", token_server=ts))
        reg.seed_image("team/app", "v1")
        config = aociauth.ConfigFile.from_dict(
            {"auths": {reg.host: {"username": "alice", "password": "pw"}}}
        )
        url = f"{reg.url}/v2/team/app/manifests/v1"
        async with harness.client(aociauth.StdTransportParams(config=config)) as client:
            first = await client.get(url, ACCEPT)
            second = await client.get(url, ACCEPT)
            fetched = client.stats.total_token_requests
    finally:
        await harness.stop()
    return first, second, fetched, reg.running


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_each_adapter_answers_alike_and_the_harness_stops_its_servers(
    adapter: str,
) -> None:
    first, second, fetched, running = await pull(Harness(adapter))  # type: ignore[arg-type]
    assert (first.status, second.status) == (200, 200)
    assert first.body == second.body
    assert first.body.startswith(b"{")
    # The caller's own request shows no Authorization: the adapter adds it on the wire.
    assert (first.authorization, second.authorization) == (None, None)
    assert fetched == 1
    assert not running


def test_httpx_on_trio_with_the_servers_on_a_portal() -> None:
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        first, _, fetched, running = anyio.run(pull, Harness("httpx", portal), backend="trio")
    assert (first.status, fetched, running) == (200, 1, False)
