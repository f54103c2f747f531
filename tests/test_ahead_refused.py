"""A token server that grants only what the registry challenged for (issue 11 item 4).

Such a server refuses every token fetched ahead of the registry's 401: after
one refusal the middleware stops fetching ahead for that registry, and until
the server has granted one, one fetch ahead goes at a time (the rest of a burst
wait for it), so N repositories cost at most N + 2 token requests, through
either adapter. A server that grants them loses nothing: one 401 for a burst.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import anyio
import anyio.from_thread
import pytest

from aociauth import ConfigFile, StdTransportParams
from aociauth.testing import Registry, TokenServer
from aociauth.testing.adapters import ADAPTERS, AdapterClient, Answer, Harness
from aociauth.testing.registry import OCI_MANIFEST
from aociauth.testing.tokenserver import Access

#: The Accept header of a manifest pull.
MANIFEST = {"Accept": OCI_MANIFEST}

USERS = {"alice": "alice-password"}


def alice(reg: Registry, **extra: str) -> StdTransportParams:
    """Params with alice's password for ``reg`` (and ``extra`` entry fields)."""
    entry = {"username": "alice", "password": USERS["alice"], **extra}
    return StdTransportParams(config=ConfigFile.from_dict({"auths": {reg.host: entry}}))


@pytest.fixture(params=ADAPTERS)
def env(request: pytest.FixtureRequest) -> Harness:
    return Harness(str(request.param))


async def pair(env: Harness, n: int, *, picky: bool) -> tuple[TokenServer, Registry]:
    ts = await env.serve(TokenServer(users=USERS))
    reg = await env.serve(Registry(auth="bearer", token_server=ts))
    for i in range(n):
        reg.seed_image(f"team/app{i}", "v1")
    if picky:

        def challenged_for(subject: str | None, access: Access) -> bool:
            prefix = f"/v2/{access.resource}/"
            return any(r.status == 401 and r.path.startswith(prefix) for r in reg.requests)

        ts.grants = challenged_for
        ts.picky = True
    return ts, reg


async def pull_all(c: AdapterClient, reg: Registry, n: int, *, concurrent: bool) -> list[Answer]:
    answers: list[Answer] = []

    async def one(i: int) -> None:
        answers.append(await c.get(f"{reg.url}/v2/team/app{i}/manifests/v1", MANIFEST))

    if not concurrent:
        for i in range(n):
            await one(i)
        return answers
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return answers


@pytest.mark.parametrize(
    ("n", "concurrent", "cap"), [(100, True, 1), (100, True, 50), (10, False, 50)]
)
async def test_a_picky_token_server_costs_at_most_n_plus_2_token_requests(
    env: Harness, n: int, concurrent: bool, cap: int
) -> None:
    try:
        ts, reg = await pair(env, n, picky=True)
        async with env.client(replace(alice(reg), coalesce_token_requests=cap)) as c:
            answers = await pull_all(c, reg, n, concurrent=concurrent)
            stats = c.stats
    finally:
        await env.stop()
    assert [a.status for a in answers] == [200] * n
    # Each repository is answered 401 once: its token comes from its challenge.
    assert reg.counters.unauthorized == n
    if cap > 1 and concurrent:
        # The first contact's token request carries the scopes of the 49 requests held
        # behind it, which the registry has not challenged for: refused, as is the one
        # trial fetch ahead; then one per repository (the goal is n + 2 at most).
        assert ts.counters.requests == n + 2
        assert [len(r.scopes) for r in ts.requests if r.status == 401] == [50, 1]
        return
    # The first contact's, the one refused ahead, and one per other repository.
    assert ts.counters.requests == n + 1
    # One fetch ahead was tried, refused, and none after it.
    assert (stats.fetches_ahead, stats.fetches_ahead_failed) == (1, 1)
    assert ts.counters.unauthorized == 1
    if concurrent:
        assert stats.ahead_waits == n - 2  # all but the first contact and the trial


@pytest.mark.parametrize(("n", "concurrent"), [(100, True), (10, False)])
async def test_a_token_server_that_grants_ahead_loses_nothing(
    env: Harness, n: int, concurrent: bool
) -> None:
    try:
        ts, reg = await pair(env, n, picky=False)
        async with env.client(alice(reg)) as c:
            answers = await pull_all(c, reg, n, concurrent=concurrent)
            stats = c.stats
    finally:
        await env.stop()
    assert [a.status for a in answers] == [200] * n
    # A burst's concurrent misses share token requests of up to 50 scopes (the
    # default cap); one pull after another asks once per repository. Either way each
    # repository's scope is asked for exactly once.
    assert ts.counters.requests == (2 if concurrent else n)
    assert sorted(item for r in ts.requests for item in r.scopes) == sorted(
        f"repository:team/app{i}:pull" for i in range(n)
    )
    assert reg.counters.unauthorized == 1
    assert stats.fetches_ahead == n - 1
    assert stats.fetches_ahead_failed == 0


@pytest.fixture(scope="module")
def server_portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    """An asyncio loop in a thread of its own, for the servers of the trio run."""
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        yield portal


def test_a_picky_token_server_burst_through_httpx_on_trio(
    server_portal: anyio.from_thread.BlockingPortal,
) -> None:
    n = 100

    async def main() -> tuple[int, int, list[int]]:
        env = Harness("httpx", server_portal)
        try:
            ts, reg = await pair(env, n, picky=True)
            async with env.client(alice(reg)) as c:
                answers = await pull_all(c, reg, n, concurrent=True)
        finally:
            await env.stop()
        return ts.counters.requests, reg.counters.unauthorized, [a.status for a in answers]

    tokens, unauthorized, statuses = anyio.run(main, backend="trio")
    assert statuses == [200] * n
    # As on asyncio: the first contact's wide request and the trial refused, then one
    # token request per repository.
    assert (tokens, unauthorized) == (n + 2, n)
