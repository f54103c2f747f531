"""The token cache and the retry rules under hostile conditions.

Identities never share a token; a cancelled caller leaves shared work to the
others; a failure is delivered to everyone waiting on it and then forgotten;
a registry that never stops answering 401 gets exactly two requests per call;
a 429 is the caller's business; token requests stay bounded in size.
(security.md T-K1..T-K9, B3, B6, C6.) Everything is counted; nothing is timed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth import ResourceScope, new_scope, parse_scope, with_scope
from aociauth.core import Prepared, RequestFacts
from aociauth.testing import Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.scripted import ScriptedServer

PASSWORDS = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol"}

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0


@dataclass
class Stack:
    ts: TokenServer
    reg: Registry

    def url(self, path: str) -> str:
        return f"{self.reg.url}{path}"

    def login(self, user: str) -> dict[str, str]:
        return {"username": user, "password": PASSWORDS[user]}


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with (
        TokenServer(users=PASSWORDS) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
    ):
        yield Stack(ts, reg)


async def status_of(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        return r.status


async def until(cond: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a condition the test cannot await directly."""

    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(poll(), BOUND)
    except asyncio.TimeoutError:
        pytest.fail(f"never happened: {what}")


# -- identities ----------------------------------------------------------------------


async def test_two_middlewares_for_two_users_never_share_a_token(stack: Stack) -> None:
    """alice and bob pull the same repositories at once, each through their own middleware.

    Each request says who sent it in its query string; the registry records
    the subject of the token it carried: they always match.
    """
    digests = [stack.reg.seed_blob(f"shared/r{i}", b"blob %d" % i) for i in range(5)]
    async with (
        loopback_client(
            aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("alice")}})
        ) as (_, alice),
        loopback_client(
            aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("bob")}})
        ) as (_, bob),
    ):

        async def pull(who: str, session: aiohttp.ClientSession, i: int) -> int:
            path = f"/v2/shared/r{i % 5}/blobs/{digests[i % 5]}?client={who}"
            return await status_of(session, stack.url(path))

        jobs = [pull("alice", alice, i) for i in range(50)]
        jobs += [pull("bob", bob, i) for i in range(50)]
        assert await asyncio.wait_for(asyncio.gather(*jobs), BOUND) == [200] * 100
    served = [r for r in stack.reg.requests if r.status == 200]
    assert len(served) == 100
    assert all(r.query == f"client={r.subject}" for r in served)
    # Each user's five scopes asked once, in one token request of that user's alone
    # (the requests held behind each middleware's first contact share it).
    for user in ("alice", "bob"):
        mine = [r for r in stack.ts.requests if r.username == user]
        assert len(mine) == 1
        assert sorted(mine[0].scopes) == [f"repository:shared/r{i}:pull" for i in range(5)]


async def test_per_namespace_credentials_in_a_cold_concurrent_burst(stack: Stack) -> None:
    """One middleware, three identities by namespace key, 90 requests at once to a registry
    it has not met: every request carries a token of the identity its namespace names."""
    host = stack.reg.host
    config = aociauth.ConfigFile.from_dict(
        {
            "auths": {
                host: stack.login("carol"),
                f"{host}/team-a": stack.login("alice"),
                f"{host}/team-b": stack.login("bob"),
            }
        }
    )
    owner = {"team-a": "alice", "team-b": "bob", "team-c": "carol", "team-ab": "carol"}
    repos = [f"{ns}/app{i}" for ns in owner for i in range(3)]
    digests = {repo: stack.reg.seed_blob(repo, repo.encode()) for repo in repos}
    async with loopback_client(config) as (mw, session):
        jobs = [
            status_of(session, stack.url(f"/v2/{repo}/blobs/{digests[repo]}"))
            for repo in itertools.islice(itertools.cycle(repos), 90)
        ]
        assert await asyncio.wait_for(asyncio.gather(*jobs), BOUND) == [200] * 90
    served = [r for r in stack.reg.requests if r.status == 200]
    assert len(served) == 90
    for r in served:
        namespace = r.path.split("/")[2]
        assert r.subject == owner[namespace], r
    for t in stack.ts.requests:
        assert {s.split(":")[1].split("/")[0] for s in t.scopes} <= {
            ns for ns, user in owner.items() if user == t.username
        }, t
    # One cold start: a single request found out the challenge.
    assert mw.stats.responses_401 == 1


# -- cancellation --------------------------------------------------------------------


async def test_fetch_left_by_every_waiter_still_completes_and_is_cached(stack: Stack) -> None:
    digest = stack.reg.seed_blob("team/app", b"blob")
    url = stack.url(f"/v2/team/app/blobs/{digest}")
    async with loopback_client(
        aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("alice")}})
    ) as (mw, session):
        stack.ts.pause()
        callers = [asyncio.ensure_future(status_of(session, url)) for _ in range(5)]
        await stack.ts.wait_for_requests(1)
        for c in callers:
            c.cancel()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        stack.ts.resume()
        await until(
            lambda: (
                mw.cached_token(stack.reg.url, parse_scope("repository:team/app:pull")) is not None
            ),
            "the abandoned fetch finished and was cached",
        )
        assert await asyncio.wait_for(status_of(session, url), BOUND) == 200
    assert stack.ts.counters.requests == 1


async def test_cancelled_first_contact_lets_the_others_go_on(stack: Stack) -> None:
    """The request that went first to a new registry is cancelled while the registry holds it;
    the requests waiting behind it do not wait forever: another one goes first."""
    digest = stack.reg.seed_blob("team/app", b"blob")
    url = stack.url(f"/v2/team/app/blobs/{digest}")
    async with loopback_client(
        aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("alice")}})
    ) as (mw, session):
        stack.reg.pause()
        first = asyncio.ensure_future(status_of(session, url))
        await stack.reg.wait_for_requests(1)
        others = [asyncio.ensure_future(status_of(session, url)) for _ in range(4)]
        await until(lambda: mw.stats.first_contact_waits >= 4, "the others wait for first contact")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await stack.reg.wait_for_requests(2)
        stack.reg.resume()
        assert await asyncio.wait_for(asyncio.gather(*others), BOUND) == [200] * 4
    assert stack.ts.counters.requests == 1


# -- failures ------------------------------------------------------------------------


async def test_failure_is_delivered_to_every_waiter_and_not_cached(stack: Stack) -> None:
    digest = stack.reg.seed_blob("team/app", b"blob")
    url = stack.url(f"/v2/team/app/blobs/{digest}")
    params = {"authorize_ahead": False, "coalesce_first_contact": False, "retry_backoff": 0.01}
    async with loopback_client(
        aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("alice")}}), **params
    ) as (mw, session):
        stack.ts.fail_next(3, status=503)
        stack.ts.pause()
        callers = [asyncio.ensure_future(status_of(session, url)) for _ in range(50)]
        await until(lambda: mw.stats.responses_401 == 50, "fifty 401s")
        for _ in range(5):
            await asyncio.sleep(0)  # let the last of them join the shared fetch
        stack.ts.resume()
        results = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), BOUND)
        assert all(isinstance(r, aociauth.TokenServerError) and r.status == 503 for r in results)
        # One fetch, three attempts, shared by fifty callers.
        assert stack.ts.counters.requests == 3
        assert await asyncio.wait_for(status_of(session, url), BOUND) == 200
    assert stack.ts.counters.requests == 4


Answer = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def run_against(
    answer: Answer, calls: int, concurrent: bool
) -> tuple[int, aociauth.AuthStats, list[int]]:
    """Make ``calls`` pulls against a registry answering with ``answer``; return what it saw."""
    counter = itertools.count()

    async def tokens(req: web.Request) -> web.StreamResponse:
        return web.json_response({"token": f"tok{next(counter)}"})

    async with ScriptedServer(tokens) as ts:

        async def registry(req: web.Request) -> web.StreamResponse:
            return await answer(req, ts.port)

        async with ScriptedServer(registry) as reg, loopback_client(None) as (mw, session):
            url = reg.url_for("/v2/team/app/manifests/latest")
            if concurrent:
                statuses = await asyncio.wait_for(
                    asyncio.gather(*(status_of(session, url) for _ in range(calls))), BOUND
                )
            else:
                statuses = [
                    await asyncio.wait_for(status_of(session, url), BOUND) for _ in range(calls)
                ]
        return len(reg.requests), mw.stats, list(statuses)


fresh = itertools.count()


async def always_401_bearer(req: web.Request, port: int) -> web.StreamResponse:
    # A new scope and an error every time, so no two challenges are alike.
    n = next(fresh)
    challenge = (
        f'Bearer realm="http://127.0.0.1:{port}/token",service="s",'
        f'scope="repository:team/app:pull repository:x{n}:pull",error="invalid_token"'
    )
    return web.Response(status=401, headers={"WWW-Authenticate": challenge})


async def always_401_insufficient(req: web.Request, port: int) -> web.StreamResponse:
    n = next(fresh)
    challenge = (
        f'Bearer realm="http://127.0.0.1:{port}/token",service="s",'
        f'scope="repository:y{n}:pull",error="insufficient_scope"'
    )
    return web.Response(status=401, headers={"WWW-Authenticate": challenge})


@pytest.mark.parametrize("answer", [always_401_bearer, always_401_insufficient])
@pytest.mark.parametrize("concurrent", [False, True])
async def test_registry_that_always_answers_401_gets_two_requests_per_call(
    answer: Answer, concurrent: bool
) -> None:
    calls = 20
    seen, stats, statuses = await run_against(answer, calls, concurrent)
    assert seen == 2 * calls
    # The original's rule: a 401 for a token fetched just now is a 403.
    assert statuses == [403] * calls
    # At most one fetch ahead and one after the 401, per call.
    assert stats.total_token_requests <= 2 * calls


async def test_registry_that_always_answers_401_basic_gets_at_most_two_requests_per_call() -> None:
    async def basic(req: web.Request) -> web.StreamResponse:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    class Creds:
        async def entry_for_registry(self, host: str) -> aociauth.ConfigEntry:
            return aociauth.ConfigEntry(username="alice", password="pw-alice")

    async with ScriptedServer(basic) as reg, loopback_client(Creds()) as (mw, session):
        url = reg.url_for("/v2/team/app/manifests/latest")
        statuses = [await asyncio.wait_for(status_of(session, url), BOUND) for _ in range(10)]
    assert statuses == [401] * 10
    # The first call learns the challenge (2 requests), the rest send Basic at once.
    assert len(reg.requests) == 2 + 9
    assert mw.stats.total_token_requests == 0


# -- 429 -----------------------------------------------------------------------------


async def test_registry_429_keeps_the_cached_token_and_fetches_nothing(stack: Stack) -> None:
    digest = stack.reg.seed_blob("team/app", b"blob")
    url = stack.url(f"/v2/team/app/blobs/{digest}")
    async with loopback_client(
        aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("alice")}})
    ) as (mw, session):
        assert await status_of(session, url) == 200
        stack.reg.rate_limit_next(3, retry_after=3600)
        for _ in range(3):
            async with session.get(url) as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "3600"
                assert b"TOOMANYREQUESTS" in await r.read()
        assert await status_of(session, url) == 200
    assert stack.ts.counters.requests == 1
    assert mw.stats.responses_401 == 1
    assert mw.stats.registry_429s == 3  # counted on the fast lane too


async def test_429_with_a_challenge_header_is_still_not_a_401() -> None:
    async def registry(req: web.Request) -> web.StreamResponse:
        challenge = 'Bearer realm="http://127.0.0.1:9/token",service="s"'
        return web.Response(
            status=429,
            text="slow down",
            headers={"WWW-Authenticate": challenge, "Retry-After": "5"},
        )

    async with (
        ScriptedServer(registry) as reg,
        loopback_client(None) as (mw, session),
        session.get(reg.url_for("/v2/team/app/manifests/latest")) as r,
    ):
        assert (r.status, await r.text(), r.headers["Retry-After"]) == (429, "slow down", "5")
    assert len(reg.requests) == 1
    assert mw.stats.total_token_requests == 0


# -- bounded token requests -------------------------------------------------------------


async def test_token_requests_do_not_grow_with_history(stack: Stack) -> None:
    """A hundred repositories one after another: each token request asks for one item,
    not for everything asked before (scopes do not accumulate)."""
    digests = [stack.reg.seed_blob(f"team/r{i}", b"%d" % i) for i in range(100)]
    async with loopback_client(
        aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("alice")}})
    ) as (_, session):
        for i, d in enumerate(digests):
            assert await status_of(session, stack.url(f"/v2/team/r{i}/blobs/{d}")) == 200
    assert len(stack.ts.requests) == 100
    assert max(len(r.scopes) for r in stack.ts.requests) == 1


def long_scope(n: int) -> aociauth.Scope:
    return new_scope(
        *(
            ResourceScope("repository", f"organisation-name/project-repository-{i:04}", "pull")
            for i in range(n)
        )
    )


async def test_wanted_scope_past_the_item_bound_is_left_out(stack: Stack) -> None:
    digest = stack.reg.seed_blob("team/app", b"blob")
    async with loopback_client(
        aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("alice")}})
    ) as (_, session):
        with with_scope(long_scope(10_000)):
            assert await status_of(session, stack.url(f"/v2/team/app/blobs/{digest}")) == 200
    assert [r.scopes for r in stack.ts.requests] == [("repository:team/app:pull",)]


async def test_wanted_scope_within_the_item_bound_never_costs_the_request(stack: Stack) -> None:
    digest = stack.reg.seed_blob("team/app", b"blob")
    async with loopback_client(
        aociauth.ConfigFile.from_dict({"auths": {stack.reg.host: stack.login("alice")}})
    ) as (_, session):
        with with_scope(long_scope(250)):
            status = await asyncio.wait_for(
                status_of(session, stack.url(f"/v2/team/app/blobs/{digest}")), BOUND
            )
    assert status == 200
    assert any("repository:team/app:pull" in r.scopes for r in stack.ts.requests)


@pytest.mark.parametrize("body_size", [0, 4 * 1024 * 1024])
@pytest.mark.parametrize("how", ["read", "text", "json", "content"])
async def test_the_403_for_a_refused_fresh_token_reads_like_any_response(
    how: str, body_size: int
) -> None:
    """Whatever the refused 401 carried (nothing, or a body too big to drain)."""

    async def read(r: aiohttp.ClientResponse) -> bytes:
        if how == "read":
            return await r.read()
        if how == "text":
            return (await r.text()).encode()
        if how == "json":
            return json.dumps(await r.json(), separators=(",", ":")).encode()
        return await r.content.read()

    async def tokens(req: web.Request) -> web.StreamResponse:
        return web.json_response({"token": "tok"})

    async with ScriptedServer(tokens) as ts:

        async def registry(req: web.Request) -> web.StreamResponse:
            resp = await always_401_bearer(req, ts.port)
            assert isinstance(resp, web.Response)
            resp.body = b"x" * body_size
            return resp

        async with (
            ScriptedServer(registry) as reg,
            loopback_client(None) as (_, session),
            session.get(reg.url_for("/v2/team/app/manifests/latest")) as r,
        ):
            assert r.status == 403
            assert "WWW-Authenticate" not in r.headers
            body = await read(r)
    assert json.loads(body)["errors"][0]["code"] == "DENIED"


def fake_jwt(n: int, access: list[dict[str, object]]) -> str:
    """A JWT-shaped token (unsigned: only the middleware reads it) claiming ``access``."""

    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none'})}.{b64({'sub': 'x', 'jti': n, 'access': access})}.sig"


async def test_a_token_claiming_more_than_asked_is_trusted_for_what_was_asked_only() -> None:
    """The token server answers every request with a token that claims pull and push on
    every repository and the catalog. The claim can only narrow what the cache believes:
    the next repository still gets a token of its own."""
    everything = [
        {"type": "repository", "name": name, "actions": ["pull", "push", "delete"]}
        for name in ("team/a", "team/b", "team/c")
    ] + [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    issued: list[str] = []

    async def tokens(req: web.Request) -> web.StreamResponse:
        issued.append(fake_jwt(len(issued), everything))
        return web.json_response({"token": issued[-1]})

    async with ScriptedServer(tokens) as ts:
        used: dict[str, set[str]] = {}

        async def registry(req: web.Request) -> web.StreamResponse:
            repo = "/".join(req.path.split("/")[2:4])
            auth = req.headers.get("Authorization", "")
            if auth.startswith("Bearer ") and auth[7:] in issued:
                used.setdefault(repo, set()).add(auth[7:])
                return web.Response(text="ok")
            challenge = (
                f'Bearer realm="{ts.url_for("/token")}",service="s",scope="repository:{repo}:pull"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})

        async with ScriptedServer(registry) as reg, loopback_client(None) as (_, session):
            for repo in ("team/a", "team/b", "team/c", "team/a", "team/b"):
                assert await status_of(session, reg.url_for(f"/v2/{repo}/manifests/x")) == 200
    assert len(issued) == 3
    assert used == {"team/a": {issued[0]}, "team/b": {issued[1]}, "team/c": {issued[2]}}
    asked = [s.query for s in ts.requests]
    assert all(q.count("scope=") == 1 for q in asked)


async def test_a_cold_request_asks_the_cores_ready_once() -> None:
    # The middleware asks ready() for its hot path; when it says no, the flow it
    # starts is told so rather than asking again.
    async def anonymous(req: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async with ScriptedServer(anonymous) as reg, loopback_client(None) as (mw, session):
        core = mw._core
        ready = core.ready
        asked: list[object] = []

        def counted(facts: RequestFacts) -> Prepared | None:
            asked.append(facts)
            return ready(facts)

        core.ready = counted  # type: ignore[method-assign]
        for n in range(3):
            async with session.get(reg.url_for(f"/v2/r{n}/manifests/latest")) as resp:
                assert resp.status == 200
    assert len(asked) == 3
    assert len(reg.requests) == 3


# -- the fast lane -------------------------------------------------------------------


PULL_OTHER = parse_scope("repository:team/other:pull")
PULL_APP = parse_scope("repository:team/app:pull")


def counting_ready(mw: aociauth.AuthMiddleware) -> list[RequestFacts]:
    """Record each time the middleware asks the core's ready(): the whole path."""
    core = mw._core
    ready = core.ready
    asked: list[RequestFacts] = []

    def counted(facts: RequestFacts) -> Prepared | None:
        asked.append(facts)
        return ready(facts)

    core.ready = counted  # type: ignore[method-assign]
    return asked


def alice_blob(reg: Registry) -> tuple[str, aociauth.ConfigFile]:
    """A blob seeded at ``reg`` (its URL), and a config logging alice in there."""
    url = f"{reg.url}/v2/team/app/blobs/{reg.seed_blob('team/app', b'blob')}"
    login = {"username": "alice", "password": PASSWORDS["alice"]}
    return url, aociauth.ConfigFile.from_dict({"auths": {reg.host: login}})


async def test_a_plain_request_decided_before_takes_the_fast_lane(stack: Stack) -> None:
    url, config = alice_blob(stack.reg)
    async with loopback_client(config) as (mw, session):
        # The first is served by the token it fetched; the second, by the cached
        # token, is the one the core remembers.
        for _ in range(2):
            assert await status_of(session, url) == 200
        asked = counting_ready(mw)
        hits = mw.stats.cache_hits
        for _ in range(5):
            assert await status_of(session, url) == 200
        assert asked == []  # the core's hit() answered, without the whole path
        assert mw.stats.cache_hits == hits + 5
        # Not plain: a scope or request info of the caller's, or an Authorization of
        # its own.
        with with_scope(PULL_OTHER):
            assert await status_of(session, url) == 200
        with aociauth.with_request_info(aociauth.RequestInfo(PULL_APP)):
            assert await status_of(session, url) == 200  # the same token, the whole path
        async with session.get(url, headers={"Authorization": "Basic b3duOm93bg=="}) as r:
            assert r.status == 200
            assert r.request_info.headers["Authorization"] == "Basic b3duOm93bg=="
        assert len(asked) == 3
    assert stack.ts.counters.requests == 1
    assert stack.reg.counters.bearer == 10


async def test_a_pre_signed_url_on_the_fast_lane_is_still_hidden(stack: Stack) -> None:
    url, config = alice_blob(stack.reg)
    url += "?X-Amz-Signature=not-for-logs"
    async with loopback_client(config) as (mw, session):
        asked = counting_ready(mw)
        for _ in range(3):  # fetched, remembered, then on the fast lane
            async with session.get(url) as r:
                assert r.status == 200
                assert "not-for-logs" not in str(r.request_info.real_url)
                assert "not-for-logs" in str(r.url)  # the URL itself stays the caller's
        assert len(asked) == 2


async def test_a_config_check_due_is_not_skipped_by_the_fast_lane(
    stack: Stack, tmp_path: pathlib.Path
) -> None:
    # A docker login as another user while the program runs: even a request the
    # core remembers goes the whole way once the config is due a check.
    digest = stack.reg.seed_blob("team/app", b"blob")
    config_json = tmp_path / "config.json"

    def login(user: str) -> None:
        tmp = tmp_path / "config.tmp"
        tmp.write_text(json.dumps({"auths": {stack.reg.host: stack.login(user)}}))
        tmp.replace(config_json)

    login("alice")
    config = aociauth.load_with_env(env={"DOCKER_CONFIG": str(tmp_path), "HOME": str(tmp_path)})
    url = stack.url(f"/v2/team/app/blobs/{digest}")
    async with loopback_client(config, config_check_interval=0) as (mw, session):
        for _ in range(2):
            assert await status_of(session, url) == 200
        login("bob")
        assert await status_of(session, url) == 200
        assert mw.stats.config_lookups == 2
    assert [r.username for r in stack.ts.requests] == ["alice", "bob"]


class _BehindLoop(asyncio.SelectorEventLoop):
    """A loop whose clock is not time.monotonic() (as a test loop with virtual time)."""

    def time(self) -> float:
        return super().time() - 1_000_000.0


def test_the_fast_lane_reads_the_loops_own_clock() -> None:
    # time.monotonic() stands in for the stdlib loop's time() only: on this loop,
    # tokens are timed by its own clock, and so must the fast lane be.
    async def scenario() -> tuple[int, int]:
        async with (
            TokenServer(users=PASSWORDS) as ts,
            Registry(auth="bearer", token_server=ts) as reg,
        ):
            url, config = alice_blob(reg)
            async with loopback_client(config) as (mw, session):
                for _ in range(2):
                    assert await status_of(session, url) == 200
                asked = counting_ready(mw)
                for _ in range(3):
                    assert await status_of(session, url) == 200
                return len(asked), ts.counters.requests

    loop = _BehindLoop()
    try:
        assert loop.run_until_complete(scenario()) == (0, 1)
    finally:
        loop.close()


async def test_a_token_refused_on_the_fast_lane_is_replaced_once() -> None:
    # Revoked while the core remembers it: the 401 goes to the core as on the whole
    # path, one new token is fetched, and the caller sees the answer to the resend.
    async with (
        TokenServer(users=PASSWORDS, opaque_tokens=True) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
    ):
        url, config = alice_blob(reg)
        async with loopback_client(config) as (mw, session):
            for _ in range(3):
                assert await status_of(session, url) == 200
            asked = counting_ready(mw)
            ts.revoke_opaque_tokens()
            for _ in range(3):
                assert await status_of(session, url) == 200
            # The refused one went by the fast lane; the one after, by the whole path
            # (the new token is remembered then); the last, by the fast lane again.
            assert len(asked) == 1
            assert mw.stats.responses_401 == 2
    assert ts.counters.requests == 2
    assert reg.counters.unauthorized == 2


async def test_a_followed_redirect_to_a_remembered_url_is_still_hidden() -> None:
    # A registry redirecting a blob to a pre-signed URL of its own that the core
    # remembers: the hop must still hide the redirect's Location, which stays in
    # resp.history for any error message to print.
    async with TokenServer(users=PASSWORDS) as ts:
        challenge = f'Bearer realm="{ts.realm}",service="{ts.service}"'
        signed = "/v2/team/app/blobs/sha256:aa?X-Amz-Signature=not-for-logs"

        async def registry(req: web.Request) -> web.StreamResponse:
            if not req.headers.get("Authorization", "").startswith("Bearer "):
                return web.Response(status=401, headers={"WWW-Authenticate": challenge})
            if req.path.endswith("/redirect"):
                return web.Response(status=307, headers={"Location": signed})
            return web.Response(text="blob")

        async with ScriptedServer(registry) as reg:
            login = {"username": "alice", "password": PASSWORDS["alice"]}
            config = aociauth.ConfigFile.from_dict({"auths": {reg.host: login}})
            async with loopback_client(config) as (mw, session):
                for _ in range(2):  # fetched, then remembered
                    assert await status_of(session, reg.url_for(signed)) == 200
                asked = counting_ready(mw)
                async with session.get(reg.url_for("/v2/team/app/blobs/redirect")) as r:
                    assert r.status == 200
                    (redirect,) = r.history
                    assert "not-for-logs" not in redirect.headers["Location"]
                # The hop took the whole path, as every followed redirect does.
                assert len(asked) == 2
