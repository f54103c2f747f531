"""The same scenarios through each adapter of the core, counting the same.

Every scenario runs against the in-process registry and token server once
through the aiohttp middleware and once through the httpx ``RegistryAuth``,
and must meet the same number of 401s and make the same token requests (by
kind, as the token server saw them and as the adapter counted them). Some
run again through httpx on trio: the servers (aiohttp) then run on an
asyncio loop in a thread of their own. Those tests call ``anyio.run(...,
backend="trio")`` themselves: with pytest-asyncio in auto mode, a test
marked ``anyio`` is run by pytest-asyncio, on asyncio, whatever its
``anyio_backend`` says (measured with pytest-asyncio 1.5 and anyio 4.16).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import pytest

from aociauth import ConfigFile, ResourceScope, StdTransportParams, new_scope, with_scope
from aociauth._responses import DENIED_MESSAGE
from aociauth.stats import AuthStats
from aociauth.testing import RecordingServer, Registry, TokenServer
from aociauth.testing.adapters import ADAPTERS, AdapterClient, Answer, Harness

USERS = {"alice": "alice-password"}
MANIFEST = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


@dataclass(frozen=True)
class Tally:
    """What a scenario counted."""

    registry_401s: int
    #: Token requests by kind, as the token server saw them.
    token_requests: dict[str, int]
    #: The same, as the adapter counted them.
    counted: dict[str, int]


def tally(reg: Registry, ts: TokenServer | None, stats: AuthStats) -> Tally:
    seen: dict[str, int] = {}
    if ts is not None:
        c = ts.counters
        kinds = {
            "get_basic": c.get_basic,
            "get_anonymous": c.get_anonymous,
            # A POST the server has no endpoint for is still a refresh-token request.
            "post_refresh": c.post_refresh + c.post_rejected_404 + c.post_rejected_405,
        }
        seen = {k: v for k, v in kinds.items() if v}
    return Tally(reg.counters.unauthorized, seen, dict(stats.token_requests))


def config_for(reg: Registry, **entry: str) -> ConfigFile:
    return ConfigFile.from_dict({"auths": {reg.host: entry}} if entry else {})


def alice(reg: Registry, **extra: str) -> StdTransportParams:
    entry = {"username": "alice", "password": USERS["alice"], **extra}
    return StdTransportParams(config=config_for(reg, **entry))


async def bearer_pair(env: Harness, **token_server: Any) -> tuple[TokenServer, Registry]:
    ts = await env.serve(TokenServer(users=USERS, **token_server))
    reg = await env.serve(Registry(auth="bearer", token_server=ts))
    reg.seed_image("team/app", "v1")
    return ts, reg


async def pull_twice(env: Harness, reg: Registry, params: StdTransportParams) -> AdapterClient:
    async with env.client(params) as c:
        for _ in range(2):
            a = await c.get(f"{reg.url}/v2/team/app/manifests/v1", MANIFEST)
            assert (a.status, a.authorization) == (200, None)
        return c


# -- the scenarios -----------------------------------------------------------------


async def basic(env: Harness) -> Tally:
    reg = await env.serve(Registry(auth="basic", users=USERS))
    reg.seed_image("team/app", "v1")
    c = await pull_twice(env, reg, alice(reg))
    return tally(reg, None, c.stats)


async def bearer(env: Harness) -> Tally:
    ts, reg = await bearer_pair(env)
    c = await pull_twice(env, reg, alice(reg))
    return tally(reg, ts, c.stats)


async def anonymous(env: Harness) -> Tally:
    ts, reg = await bearer_pair(env)
    c = await pull_twice(env, reg, StdTransportParams(config=config_for(reg)))
    return tally(reg, ts, c.stats)


async def refresh_token(env: Harness) -> Tally:
    ts, reg = await bearer_pair(env)
    params = StdTransportParams(
        config=config_for(reg, identitytoken=ts.issue_refresh_token("alice"))
    )
    c = await pull_twice(env, reg, params)
    return tally(reg, ts, c.stats)


def refresh_falling_back(status: int) -> Callable[[Harness], Awaitable[Tally]]:
    async def scenario(env: Harness) -> Tally:
        ts, reg = await bearer_pair(env, support_post=False, post_unsupported_status=status)
        params = StdTransportParams(config=config_for(reg, identitytoken="not-spoken-here"))
        c = await pull_twice(env, reg, params)
        return tally(reg, ts, c.stats)

    return scenario


async def wide_to_required(env: Harness) -> Tally:
    grants = {"alice": {"repository:team/*": {"pull", "push"}}}
    ts, reg = await bearer_pair(env, grants=grants, picky=True)
    with with_scope(new_scope(ResourceScope("repository", "other/thing", "pull"))):
        c = await pull_twice(env, reg, alice(reg))
    assert [r.scopes for r in ts.requests] == [
        ("repository:other/thing:pull", "repository:team/app:pull"),
        ("repository:team/app:pull",),
    ]
    return tally(reg, ts, c.stats)


async def denied(env: Harness) -> Tally:
    ts, reg = await bearer_pair(env, grants={"alice": {"repository:team/*": {"pull"}}})
    reg.seed_image("secret/app", "v1")
    async with env.client(alice(reg)) as c:
        a = await c.get(f"{reg.url}/v2/secret/app/manifests/v1", MANIFEST)
    assert (a.status, a.authorization) == (403, None)
    (error,) = json.loads(a.body)["errors"]
    assert error["code"] == "DENIED"
    assert error["message"] == (
        f"{DENIED_MESSAGE}; registry {reg.host} refused a token issued to the credentials "
        f"of user 'alice' (from <dict>, key '{reg.host}')"
    )
    return tally(reg, ts, c.stats)


async def token_server_503_twice(env: Harness) -> Tally:
    ts, reg = await bearer_pair(env)
    ts.fail_next(2, 503)
    params = alice(reg)
    params = StdTransportParams(config=params.config, retry_backoff=0.01)
    c = await pull_twice(env, reg, params)
    assert c.stats.token_server_retries == 2
    return tally(reg, ts, c.stats)


async def burst(env: Harness) -> Tally:
    ts, reg = await bearer_pair(env)
    answers: list[Answer] = []
    async with env.client(alice(reg)) as c:

        async def one() -> None:
            answers.append(await c.get(f"{reg.url}/v2/team/app/manifests/v1", MANIFEST))

        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(one)
    assert [a.status for a in answers] == [200] * 1000
    return tally(reg, ts, c.stats)


async def twenty_new_repositories(env: Harness) -> Tally:
    ts, reg = await bearer_pair(env)
    repos = [f"team/app{i}" for i in range(20)]
    for repo in repos:
        reg.seed_image(repo, "v1")
    statuses: list[int] = []
    async with env.client(alice(reg)) as c:

        async def one(repo: str) -> None:
            statuses.append((await c.get(f"{reg.url}/v2/{repo}/manifests/v1", MANIFEST)).status)

        async with anyio.create_task_group() as tg:
            for repo in repos:
                tg.start_soon(one, repo)
    assert statuses == [200] * 20
    return tally(reg, ts, c.stats)


async def redirect_to_another_origin(env: Harness) -> Tally:
    ts, reg = await bearer_pair(env)
    image = reg.seed_image("team/app", "v1")
    cdn = await env.serve(RecordingServer(blobs=reg.blobs))
    # The hop's path looks like a registry call, so the flow meets it as one.
    reg.blob_redirect = f"{cdn.url}/v2/team/app/blobs"
    async with env.client(alice(reg), follow_redirects=True) as c:
        m = await c.get(f"{reg.url}/v2/team/app/manifests/v1", MANIFEST)
        b = await c.get(f"{reg.url}/v2/team/app/blobs/{image.config_digest}")
    assert (m.status, b.status) == (200, 200)
    assert b.body == reg.blobs[image.config_digest]
    assert reg.counters.blob_redirects == 1
    assert len(cdn.requests) == 1
    assert cdn.credentials_seen() == []
    return tally(reg, ts, c.stats)


#: A refresh token alone: the POST the server has no endpoint for, then an anonymous GET.
POST_THEN_GET = {"post_refresh": 1, "get_anonymous": 1}

#: name -> (scenario, registry 401s, token requests by kind), the same for every adapter.
SCENARIOS: dict[str, tuple[Callable[[Harness], Awaitable[Tally]], int, dict[str, int]]] = {
    "basic": (basic, 1, {}),
    "bearer": (bearer, 1, {"get_basic": 1}),
    "anonymous": (anonymous, 1, {"get_anonymous": 1}),
    "refresh_token_post": (refresh_token, 1, {"post_refresh": 1}),
    "refresh_post_404_then_get": (refresh_falling_back(404), 1, POST_THEN_GET),
    "refresh_post_405_then_get": (refresh_falling_back(405), 1, POST_THEN_GET),
    "wide_scope_refused_then_required": (wide_to_required, 1, {"get_basic": 2}),
    "denied_rewritten_403": (denied, 2, {"get_basic": 1}),
    "token_server_503_twice": (token_server_503_twice, 1, {"get_basic": 3}),
    "burst_of_1000_to_one_repository": (burst, 1, {"get_basic": 1}),
    "twenty_new_repositories": (twenty_new_repositories, 1, {"get_basic": 1}),
    "redirect_to_another_origin": (redirect_to_another_origin, 1, {"get_basic": 1}),
}

#: The scenarios also run through httpx on trio.
ON_TRIO = (
    "bearer",
    "refresh_token_post",
    "refresh_post_404_then_get",
    "burst_of_1000_to_one_repository",
    "twenty_new_repositories",
    "denied_rewritten_403",
    "redirect_to_another_origin",
)


async def play(env: Harness, name: str) -> Tally:
    scenario, registry_401s, tokens = SCENARIOS[name]
    try:
        got = await scenario(env)
    finally:
        await env.stop()
    assert got == Tally(registry_401s, tokens, tokens), (env.adapter, name)
    return got


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter a scenario runs through."""
    return str(request.param)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario_counts_the_same_through_each_adapter(adapter: str, name: str) -> None:
    await play(Harness(adapter), name)


@pytest.fixture(scope="module")
def server_portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    """An asyncio loop in a thread of its own, for the servers of the trio runs."""
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        yield portal


@pytest.mark.parametrize("name", ON_TRIO)
def test_httpx_scenario_counts_the_same_on_trio(
    name: str, server_portal: anyio.from_thread.BlockingPortal
) -> None:
    async def main() -> str:
        await play(Harness("httpx", server_portal), name)
        import sniffio

        return sniffio.current_async_library()

    assert anyio.run(main, backend="trio") == "trio"
