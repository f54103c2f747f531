"""Concurrent token misses share one token request (issue 11 item 3), through both adapters.

A cold burst over many repositories of one registry, for one identity, asks
the token server for all their scopes in as few requests as the cap allows
(``coalesce_token_requests``, 50 by default): 100 repositories cost one 401
and two token requests, each repository's scope asked exactly once. A scope of
one identity never rides in another's token request, and a token server that
refuses wide requests, or reads one ``scope`` parameter only, still serves
every request, asked per scope after it (at most N + 2 token requests).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
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


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


async def pair(
    env: Harness, repositories: list[str], **token_server: Any
) -> tuple[TokenServer, Registry]:
    ts = await env.serve(TokenServer(users={**USERS, "bob": "bob-password"}, **token_server))
    reg = await env.serve(Registry(auth="bearer", token_server=ts))
    for repository in repositories:
        reg.seed_image(repository, "v1")
    return ts, reg


async def burst(c: AdapterClient, reg: Registry, repositories: list[str]) -> dict[str, Answer]:
    """GET one manifest of every repository, all at once."""
    answers: dict[str, Answer] = {}

    async def one(repository: str) -> None:
        answers[repository] = await c.get(f"{reg.url}/v2/{repository}/manifests/v1", MANIFEST)

    async with anyio.create_task_group() as tg:
        for repository in repositories:
            tg.start_soon(one, repository)
    return answers


def asked(ts: TokenServer) -> list[str]:
    """Every scope item of every token request, in order."""
    return [item for r in ts.requests for item in r.scopes]


REPOSITORIES = [f"team/app{i}" for i in range(100)]


async def test_a_cold_burst_over_100_repositories_costs_one_401_and_two_token_requests(
    env: Harness,
) -> None:
    try:
        ts, reg = await pair(env, REPOSITORIES)
        async with env.client(alice(reg)) as c:
            answers = await burst(c, reg, REPOSITORIES)
            stats = c.stats
    finally:
        await env.stop()
    assert {r: a.status for r, a in answers.items()} == dict.fromkeys(REPOSITORIES, 200)
    assert reg.counters.unauthorized == 1
    # The first contact's request twice, every other one once, each with its token.
    assert reg.counters.requests == 101
    # Two token requests of 50 scopes each (the default cap): the first contact's,
    # carrying 49 held scopes, and one for the 50 its token did not cover.
    assert ts.counters.requests == 2
    assert [len(r.scopes) for r in ts.requests] == [50, 50]
    # Each repository's scope asked exactly once; the adapter counted the same.
    assert sorted(asked(ts)) == sorted(pull_scope(r) for r in REPOSITORIES)
    assert stats.coalesced_scopes == 98
    assert sum(stats.token_requests.values()) == 2


async def test_the_cap_bounds_the_scope_items_of_every_token_request(env: Harness) -> None:
    try:
        ts, reg = await pair(env, REPOSITORIES)
        params = alice(reg)
        async with env.client(dataclasses.replace(params, coalesce_token_requests=10)) as c:
            answers = await burst(c, reg, REPOSITORIES)
            stats = c.stats
    finally:
        await env.stop()
    assert [a.status for a in answers.values()] == [200] * 100
    assert reg.counters.unauthorized == 1
    assert max(len(r.scopes) for r in ts.requests) == 10
    # Still each scope asked once: the fewest requests 10 items each allow.
    assert sorted(asked(ts)) == sorted(pull_scope(r) for r in REPOSITORIES)
    assert ts.counters.requests == 10
    assert stats.coalesced_scopes == 90


async def test_one_identitys_scopes_never_ride_in_anothers_token_request(env: Harness) -> None:
    """Per-namespace credentials: team-a is alice's, team-b bob's, one middleware, one burst."""
    owner = {"team-a": "alice", "team-b": "bob"}
    repositories = [f"{ns}/app{i}" for i in range(50) for ns in owner]
    try:
        ts, reg = await pair(env, repositories)
        config = ConfigFile.from_dict(
            {
                "auths": {
                    f"{reg.host}/team-a": {"username": "alice", "password": USERS["alice"]},
                    f"{reg.host}/team-b": {"username": "bob", "password": "bob-password"},
                }
            }
        )
        async with env.client(StdTransportParams(config=config)) as c:
            answers = await burst(c, reg, repositories)
    finally:
        await env.stop()
    assert [a.status for a in answers.values()] == [200] * 100
    for r in ts.requests:
        namespaces = {item.split(":")[1].split("/")[0] for item in r.scopes}
        assert {owner[ns] for ns in namespaces} == {r.username}, r
    # Every request the registry served carried a token of its namespace's owner.
    served = [r for r in reg.requests if r.status == 200]
    assert len(served) == 100
    assert all(r.subject == owner[r.path.split("/")[2]] for r in served)
    # Each identity's 50 scopes asked once, in at most 2 requests each.
    for user in ("alice", "bob"):
        mine = [r for r in ts.requests if r.username == user]
        assert 1 <= len(mine) <= 2
        assert len([item for r in mine for item in r.scopes]) == 50


async def test_a_token_server_that_refuses_wide_requests_is_asked_per_scope(env: Harness) -> None:
    """The server answers 401 to any token request of more than one scope item."""
    try:
        ts, reg = await pair(env, REPOSITORIES, picky=True)

        def one_scope_at_a_time(subject: str | None, access: Access) -> bool:
            # The request being answered is the last recorded.
            return subject == "alice" and len(ts.requests[-1].scopes) == 1

        ts.grants = one_scope_at_a_time
        async with env.client(alice(reg)) as c:
            answers = await burst(c, reg, REPOSITORIES)
    finally:
        await env.stop()
    assert [a.status for a in answers.values()] == [200] * 100
    wide = [r for r in ts.requests if len(r.scopes) > 1]
    assert wide, "the burst never asked wide: nothing was coalesced"
    assert all(r.status == 401 for r in wide)
    assert ts.counters.requests <= len(REPOSITORIES) + 2
    # Every repository got its token from a request for its scope alone.
    granted = sorted(r.scopes[0] for r in ts.requests if r.status == 200)
    assert granted == sorted(pull_scope(r) for r in REPOSITORIES)


async def test_a_token_server_reading_one_scope_parameter_still_serves_all(env: Harness) -> None:
    """Older GitLab keeps the last ``scope`` parameter: a wide request grants one item."""
    try:
        ts, reg = await pair(env, REPOSITORIES, scope_reading="last")
        async with env.client(alice(reg)) as c:
            answers = await burst(c, reg, REPOSITORIES)
    finally:
        await env.stop()
    assert [a.status for a in answers.values()] == [200] * 100
    assert ts.counters.requests <= len(REPOSITORIES) + 2
    # The server read one item of each request; between them, every repository's.
    assert {r.scopes[0] for r in ts.requests} == {pull_scope(r) for r in REPOSITORIES}
